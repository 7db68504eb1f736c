"""The condition every set of diffusion bases must meet (one data space, one schedule, one sampler), and the
reverse chains that classifiers train on."""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch

from pyro_sculpt.diffusion.samplers import ReverseDiffusionProcess
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.bases import check_classifier_bases as check_classifier_bases_by
from pyro_sculpt.sculpting.bases import check_shared
from pyro_sculpt.utils import check_positive_int

DiffusionBase = Union[ReverseDiffusionProcess, ProcessDistribution]


def as_sampler(base: Any, name: str = "base") -> ReverseDiffusionProcess:
    """Unwrap a :class:`~pyro_sculpt.ProcessDistribution` to its process and check that it is a reverse-diffusion
    sampler."""
    if isinstance(base, ProcessDistribution):
        base = base.process
    if not isinstance(base, ReverseDiffusionProcess):
        raise TypeError(
            f"{name} must be a diffusion sampler (a ReverseDiffusionProcess such as AncestralSampler(model)) or its "
            f"ProcessDistribution, got {type(base).__name__}"
        )
    return base


def _model_of(base: Any) -> Any:
    """The diffusion model behind a sampler or its distribution (a model itself otherwise)."""
    if isinstance(base, ProcessDistribution):
        base = base.process
    return base.model if isinstance(base, ReverseDiffusionProcess) else base


def check_classifier_bases(classifier: Any, bases: Sequence[Any]) -> None:
    """:func:`pyro_sculpt.sculpting.bases.check_classifier_bases` for diffusion bases, compared by their models
    (samplers are cheap to rebuild around one model; an exact classifier may hold copies of its oracles on another
    device, so only a permutation is refused)."""
    check_classifier_bases_by(classifier, bases, _model_of, strict=False)


def _sampler_signature(s: ReverseDiffusionProcess) -> tuple:
    coefs = tuple(s.step_coefficients(t) for t in range(s.max_steps))
    times = tuple(None if t == 0 else s.score_time(t) for t in range(s.max_steps))
    kinds = tuple(s.step_kind(t) for t in range(s.max_steps))
    return type(s), kinds, times, coefs


def check_same_space(models: Sequence[Any], name: str = "bases") -> None:
    """Raise a :class:`ValueError` unless ``models`` (diffusion models or samplers) are at least two, of one event
    shape and one noise schedule. The message names the "data dimension" of vector bases, else the "event shape"."""
    vectors = all(len(m.event_shape) == 1 for m in models)
    check_shared(
        models,
        name,
        "data dimension" if vectors else "event shape",
        lambda m: tuple(m.event_shape),
        "every base must live in one space",
        show=(lambda m: m.event_shape[0]) if vectors else (lambda m: tuple(m.event_shape)),
    )
    check_shared(models, name, "schedule", lambda m: m.schedule, "every base must share one noise schedule")


def check_diffusion_bases(
    bases: Sequence[DiffusionBase], name: str = "bases", *, same_sampler: bool = False
) -> list[ReverseDiffusionProcess]:
    """Check that ``bases`` are at least two diffusion samplers on one data space with one noise schedule.

    :param bases: reverse-diffusion samplers (:class:`~pyro_sculpt.diffusion.ReverseDiffusionProcess`) or their
        :class:`~pyro_sculpt.ProcessDistribution`.
    :param name: the argument's name in error messages.
    :param same_sampler: also require one sampler (type, time grid and step coefficients) for every base, as a
        composition steps all bases together.
    :returns: the samplers.
    :raises TypeError: for a base that is not a diffusion sampler.
    :raises ValueError: for fewer than two bases, or bases of different event shapes (data dimensions), schedules or
        samplers.
    """
    if isinstance(bases, (ReverseDiffusionProcess, ProcessDistribution)) or not hasattr(bases, "__len__"):
        raise TypeError(f"{name} must be a sequence of diffusion samplers, got {type(bases).__name__}")
    samplers = [as_sampler(b, f"{name}[{k}]") for k, b in enumerate(bases)]
    check_same_space(samplers, name)
    if same_sampler:
        check_shared(
            samplers,
            name,
            "sampler",
            _sampler_signature,
            "a composition steps every base together, so every base needs one sampler (type, time grid and "
            "options); build them with the same arguments",
            show=lambda s: s,
        )
    return samplers


def _kept_steps(sampler: ReverseDiffusionProcess, max_time: float) -> list[int]:
    """The steps of ``sampler`` that read a state at diffusion time :math:`\\tau \\le` ``max_time``."""
    kept = [t for t in range(1, sampler.max_steps) if sampler.score_time(t) <= max_time + 1e-12]
    if not kept:
        raise ValueError(
            f"max_time={max_time} is below every diffusion time of the sampler {sampler!r} (the smallest is "
            f"{sampler.score_time(sampler.max_steps - 1):.4g})"
        )
    return kept


@torch.no_grad()
def sample_reverse_chains(
    sampler: ReverseDiffusionProcess, num_chains: int, max_time: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``num_chains`` reverse chains of ``sampler`` (a plain vectorised torch loop) and keep the states that its
    steps read at diffusion times :math:`\\tau \\le` ``max_time``.

    :returns: ``(states, times, final)``: states ``(num_chains, S) + event_shape`` (the input of every kept step, in
        the sampler's order), their diffusion times ``(S,)`` (float64), and the final samples ``(num_chains,) +
        event_shape``.
    :raises ValueError: if no step of the sampler reads a state at :math:`\\tau \\le` ``max_time``.

    Example::

        states, times, final = sample_reverse_chains(AncestralSampler(model, 100), 4096, max_time=0.7)
    """
    check_positive_int("num_chains", num_chains)
    kept = _kept_steps(sampler, max_time)
    x = sampler.prior(torch.Size([num_chains])).sample()
    states = x.new_empty((num_chains, len(kept)) + tuple(sampler.event_shape))
    j = 0
    for t in range(1, sampler.max_steps):
        if j < len(kept) and kept[j] == t:
            states[:, j] = x
            j += 1
        x = sampler.step_dist(x, t).sample()
    times = torch.tensor([sampler.score_time(t) for t in kept], dtype=torch.float64)
    return states, times, x


@torch.no_grad()
def sample_forward_pairs(
    sampler: ReverseDiffusionProcess, data: torch.Tensor, num_chains: int, max_time: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward-process counterpart of :func:`sample_reverse_chains`: ``num_chains`` final samples drawn (with
    replacement) from ``data``, the base's training data, and for each, at every diffusion time :math:`\\tau \\le`
    ``max_time`` that ``sampler`` reads, an independent noisy state :math:`x_\\tau = \\alpha_\\tau x_0 + \\sigma_\\tau
    \\varepsilon` of the sampler's schedule.

    Each pair :math:`(x_0, x_\\tau)` has the law that a reverse chain of a perfect model of the data gives it, which is
    all a classifier's loss reads; the states of one row are not a chain (they are noised independently). No network
    is evaluated, so such a pool costs nothing next to reverse chains.

    :returns: ``(states, times, final)`` as :func:`sample_reverse_chains`.
    """
    check_positive_int("num_chains", num_chains)
    kept = _kept_steps(sampler, max_time)
    times = torch.tensor([sampler.score_time(t) for t in kept], dtype=torch.float64)
    idx = torch.randint(0, data.shape[0], (num_chains,), device=data.device)
    final = data[idx]
    alpha, sigma = sampler.schedule.marginal(times)
    shape = (1, len(kept)) + (1,) * (data.dim() - 1)
    alpha = alpha.to(data.device, data.dtype).reshape(shape)
    sigma = sigma.to(data.device, data.dtype).reshape(shape)
    noise = torch.randn((num_chains, len(kept)) + tuple(data.shape[1:]), device=data.device, dtype=data.dtype)
    states = alpha * final.unsqueeze(1) + sigma * noise
    return states, times, final
