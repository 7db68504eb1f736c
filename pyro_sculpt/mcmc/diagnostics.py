"""Per-level diagnostics of MCMC correctors and rejuvenation moves (mean acceptance probability, step size and
divergent moves at every noise level) and, where there is SMC, the ESS of its weights, as ArviZ ``InferenceData``;
and their plot.

The kernels' records (:attr:`CorrectorMessenger.history <pyro_sculpt.mcmc.CorrectorMessenger.history>`,
:attr:`Rejuvenation.history <pyro_sculpt.mcmc.Rejuvenation.history>`: one ``{"level", "step_size", "accept_rate",
"num_divergent"}`` per level moved; records without ``num_divergent`` are accepted) become the ``sample_stats`` group,
one chain whose draws are the levels in the order they were moved (with the noise level as the coordinate
``level``). An SMC result (anything with ``ess_history``, e.g. :class:`pyro_sculpt.infer.SMCResult`) adds the group
``smc`` with the ESS after every step (``ess``, and ``ess_frac`` divided by the particle number) over the dimension
``step``, with the steps' noise levels when given.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

_FIELDS = ("level", "step_size", "accept_rate")


def _records(source: Any) -> list:
    history = getattr(source, "history", source)
    if not isinstance(history, (list, tuple)):
        raise TypeError(
            "source must be a CorrectorMessenger, a Rejuvenation or a list of {'level', 'step_size', 'accept_rate'} "
            f"records, got {type(source).__name__}"
        )
    for k, rec in enumerate(history):
        if not isinstance(rec, dict) or any(f not in rec for f in _FIELDS):
            raise ValueError(f"history[{k}] must be a dict with keys {_FIELDS}, got {rec!r}")
    return list(history)


def level_diagnostics(
    source: Any,
    smc: Any = None,
    *,
    num_particles: Optional[int] = None,
    smc_levels: Optional[Sequence[float]] = None,
):
    """Per-level diagnostics as ArviZ ``InferenceData`` (see the module docstring).

    :param source: a :class:`~pyro_sculpt.mcmc.CorrectorMessenger` or :class:`~pyro_sculpt.mcmc.Rejuvenation` after
        a run, or its ``history`` list.
    :param smc: an SMC result with ``ess_history`` (and ``x``, whose length gives the particle number), or ``None``.
    :param num_particles: the SMC particle number (default ``len(smc.x)``), for ``ess_frac``.
    :param smc_levels: the noise level after every SMC step (e.g. ``[twist.level(t) for t in range(len(ess))]``).
    :raises ValueError: for malformed records, or levels that do not match the ESS history.

    Example::

        with ps.mcmc.corrector(kernel="mala", num_steps=5) as corr:
            x = ps.run("x", proc, num_particles=4000)
        idata = ps.mcmc.level_diagnostics(corr)
        idata.sample_stats["accept_rate"].values      # (1, levels)
    """
    import arviz as az
    import xarray as xr

    records = _records(source)
    n = len(records)
    stats = {
        "step_size": np.asarray([[r["step_size"] for r in records]], dtype=float).reshape(1, n),
        "accept_rate": np.asarray([[r["accept_rate"] for r in records]], dtype=float).reshape(1, n),
    }
    if n and all("num_divergent" in r for r in records):
        stats["num_divergent"] = np.asarray([[r["num_divergent"] for r in records]], dtype=np.int64).reshape(1, n)
    levels = np.asarray([np.nan if r["level"] is None else float(r["level"]) for r in records], dtype=float)
    idata = az.from_dict(sample_stats=stats, coords={"draw": np.arange(n)})
    idata.sample_stats = idata.sample_stats.assign_coords(level=("draw", levels))
    idata.sample_stats.attrs["num_levels"] = n
    if smc is not None:
        ess_hist = getattr(smc, "ess_history", None)
        if ess_hist is None:
            raise TypeError(f"smc must be an SMC result with ess_history, got {type(smc).__name__}")
        ess = np.asarray(ess_hist, dtype=float)
        if num_particles is None:
            x = getattr(smc, "x", None)
            num_particles = int(x.shape[0]) if x is not None else None
        data = {"ess": ("step", ess)}
        if num_particles:
            data["ess_frac"] = ("step", ess / float(num_particles))
        coords = {"step": np.arange(ess.shape[0])}
        if smc_levels is not None:
            lv = np.asarray(list(smc_levels), dtype=float)
            if lv.shape != ess.shape:
                raise ValueError(f"smc_levels has {lv.shape[0]} entries but the ESS history has {ess.shape[0]}")
            coords["level"] = ("step", lv)
        group = xr.Dataset(data, coords=coords)
        if num_particles:
            group.attrs["num_particles"] = int(num_particles)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "smc" is a group outside ArviZ's schema
            idata.add_groups({"smc": group})
    return idata


def plot_level_diagnostics(idata, axes=None, *, title: Optional[str] = None):
    """Plot :func:`level_diagnostics`: step size (log scale) and mean acceptance against the noise level (levels with
    divergent moves marked in red), and the SMC ESS fraction when the data has it. Returns the matplotlib figure.

    :param idata: from :func:`level_diagnostics`.
    :param axes: matplotlib axes to draw on (2, or 3 with SMC); default a new figure.
    :param title: the figure's title.

    The backend is the caller's (``matplotlib.use("Agg")`` for files without a display).

    Example::

        fig = ps.mcmc.plot_level_diagnostics(ps.mcmc.level_diagnostics(corr))
        fig.savefig("levels.png")
    """
    import matplotlib.pyplot as plt

    stats = idata.sample_stats
    has_smc = "smc" in idata.groups()
    k = 3 if has_smc else 2
    if axes is None:
        fig, axes = plt.subplots(1, k, figsize=(4.0 * k, 3.2))
    else:
        axes = list(np.ravel(axes))
        if len(axes) < k:
            raise ValueError(f"axes must hold {k} axes for these diagnostics, got {len(axes)}")
        fig = axes[0].figure
    level = stats["level"].values
    axes[0].plot(level, stats["step_size"].values[0], ".-")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("step size")
    axes[1].plot(level, stats["accept_rate"].values[0], ".-")
    if "num_divergent" in stats and bool((stats["num_divergent"].values[0] > 0).any()):
        bad = stats["num_divergent"].values[0] > 0
        axes[1].plot(level[bad], stats["accept_rate"].values[0][bad], "x", color="red", label="divergent moves")
        axes[1].legend(loc="best", fontsize="small")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel("mean acceptance")
    if has_smc:
        smc = idata.smc
        x = smc["level"].values if "level" in smc.coords else smc["step"].values
        y = smc["ess_frac"].values if "ess_frac" in smc else smc["ess"].values
        axes[2].plot(x, y, ".-")
        axes[2].set_ylabel("ESS / N" if "ess_frac" in smc else "ESS")
        axes[2].set_xlabel("noise level" if "level" in smc.coords else "SMC step")
    for ax in axes[:2]:
        ax.set_xlabel("noise level")
    for ax in axes[:k]:
        if "level" in ax.get_xlabel():
            ax.invert_xaxis()  # the reverse run goes from noise to data
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
