"""A trained diffusion model: a noise-prediction network, denoising score matching, EMA weights and
checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from pyro_sculpt.diffusion.model import (
    DiffusionModel,
    batch_shape_of,
    check_points,
    per_batch,
    resolve_event_shape,
    sum_event,
    time_like,
)
from pyro_sculpt.diffusion.schedules import NoiseSchedule, TimeLike, VPSchedule, schedule_from_config
from pyro_sculpt.nn import ScoreMLP, UNet
from pyro_sculpt.train.checkpoint import Checkpointable, cpu_state_dict
from pyro_sculpt.train.loop import EMA, TrainState, fit_loop
from pyro_sculpt.train.optim import ema_update_
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int, set_seed

CHECKPOINT_VERSION = 1

Data = Union[torch.Tensor, Callable[[int], torch.Tensor]]


def _check_snr_truncation(value: Any) -> float:
    """The cap ``c`` of the truncated-SNR loss weighting: a finite number >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (1.0 <= float(value) < float("inf")):
        raise ValueError(f"snr_truncation must be None or a finite number >= 1, got {value!r}")
    return float(value)


class ScoreModel(Checkpointable, nn.Module, DiffusionModel):
    """A diffusion model whose noise predictor :math:`\\hat\\epsilon_\\theta(x, t)` is a network; the score is
    :math:`s(x, t) = -\\hat\\epsilon_\\theta(x, t) / \\sigma_t`.

    :meth:`fit` trains by denoising score matching in its noise-prediction form (Ho et al. 2020; Song et al.
    2021),

    .. math::

        \\mathcal L(\\theta) = \\mathbb E_{t \\sim U[t_{min}, 1],\\ x_0,\\ \\epsilon \\sim \\mathcal N(0, I)}
        \\big\\lVert \\hat\\epsilon_\\theta(\\alpha_t x_0 + \\sigma_t \\epsilon, t)
        - \\epsilon \\big\\rVert^2,

    i.e. score matching weighted by :math:`\\sigma_t^2`, and keeps an exponential moving average of the
    weights, which :meth:`score` uses by default (``use_ema``).

    :param dim: data dimension :math:`D` of vector data (event shape ``(D,)``); give this or ``event_shape``.
    :param schedule: the noise schedule (default :class:`~pyro_sculpt.diffusion.VPSchedule`).
    :param event_shape: the shape of one data point, e.g. ``(3, 28, 28)`` for images (with ``dim``, it must have
        ``dim`` entries).
    :param network: a module ``network(x, t) -> eps`` with ``x`` of shape ``(B,) + event_shape``, ``t`` of shape
        ``(B,)`` and output of ``x``'s shape (for images, e.g. a small U-Net; :meth:`eps` flattens the batch
        dimensions of its input to the one ``B``); default a :class:`ScoreMLP` with
        ``hidden``, ``layers`` and ``time_embedding_dim`` (which flattens the event: meant for vectors and small
        events).
    :param seed: seed of the global generators before the network is initialised (a seed given to :meth:`fit`
        re-initialises it from that seed).
    :param device: where the networks live.

    Checkpoints: :meth:`save` and ``ScoreModel.load(path, *, network=None, dim=None, device=None)``
    (:meth:`_from_checkpoint`).

    Example::

        oracle = GaussianMixtureOracle(means, stds=0.2)
        model = ScoreModel(2, seed=0).fit(oracle.sample, steps=5000, seed=0)
        x = ps.ProcessDistribution(AncestralSampler(model, 200)).sample((1000,))
        model.save("model.pt"); model = ScoreModel.load("model.pt")
        images = ScoreModel(event_shape=(3, 28, 28), network=MyConvNet())    # network(x (B, 3, 28, 28), t (B,))
    """

    def __init__(
        self,
        dim: Optional[int] = None,
        schedule: Optional[NoiseSchedule] = None,
        *,
        event_shape: Optional[Sequence[int]] = None,
        network: Optional[nn.Module] = None,
        hidden: int = 128,
        layers: int = 3,
        time_embedding_dim: int = 32,
        seed: Optional[int] = None,
        device: DeviceLike = None,
    ):
        super().__init__()
        self.event_shape = resolve_event_shape(dim, event_shape)
        set_seed(seed)
        if schedule is None:
            schedule = VPSchedule()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.network = self._make_network(network, hidden, layers, time_embedding_dim)
        self.ema_network = copy.deepcopy(self.network)
        for p in self.ema_network.parameters():
            p.requires_grad_(False)
        self.use_ema = True
        self.history: list[dict] = []
        self.to(as_device(device))
        self._check_network()

    def _make_network(self, network: Optional[nn.Module], hidden: int, layers: int, time_embedding_dim: int):
        """The noise predictor: ``network``, or a :class:`ScoreMLP` of the given size (subclasses with another
        parameterisation override this)."""
        if network is not None:
            return network
        vector = len(self.event_shape) == 1
        return ScoreMLP(self.dim, hidden, layers, time_embedding_dim, event_shape=None if vector else self.event_shape)

    def _check_network(self) -> None:
        shape = (3,) + tuple(self.event_shape)
        want = "(B, " + ", ".join(str(s) for s in self.event_shape) + ")"
        try:
            with torch.no_grad():
                out = self.network(torch.zeros(shape, device=self.device), torch.full((3,), 0.5, device=self.device))
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"network must map x of shape {want} and t of shape (B,) to {want}: {err}") from None
        if not isinstance(out, torch.Tensor) or out.shape != shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"network must map x of shape {want} and t of shape (B,) to {want}, got {got}")

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        p = next(self.network.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        """The dtype of the network's floating-point parameters (torch's default if it has none)."""
        p = next((q for q in self.network.parameters() if q.is_floating_point()), None)
        return p.dtype if p is not None else torch.get_default_dtype()

    def __repr__(self) -> str:
        shape = f"dim={self.dim}" if len(self.event_shape) == 1 else f"event_shape={tuple(self.event_shape)}"
        return f"{type(self).__name__}({shape}, schedule={self.schedule!r})"

    # ----- the model -----

    def eps(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The noise prediction :math:`\\hat\\epsilon(x, t)` (EMA weights when ``use_ema``)."""
        check_points(x, self.event_shape)
        net = self.ema_network if self.use_ema else self.network
        batch = batch_shape_of(x, self.event_shape)  # the network sees one batch dimension
        xn = x.to(self.dtype)  # points of another dtype: the network's in, x's out
        tt = time_like(t, xn, self.event_shape).expand(batch).reshape(-1)
        return net(xn.reshape((-1,) + tuple(self.event_shape)), tt).reshape(x.shape).to(x.dtype)

    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """:math:`s(x, t) = -\\hat\\epsilon(x, t) / \\sigma_t`."""
        sigma = per_batch(self.schedule.sigma(time_like(t, x, self.event_shape)), self.event_shape)
        return -self.eps(x, t) / sigma

    # ----- training -----

    def loss(
        self, x0: torch.Tensor, network: Optional[nn.Module] = None, *, snr_truncation: Optional[float] = None
    ) -> torch.Tensor:
        """The denoising score matching loss on a batch ``x0`` of shape ``(B,) + event_shape`` (one random time per
        row; the squared error of the noise prediction summed over the event).

        :param snr_truncation: ``None`` (the default): every time weighs the same. A number :math:`c \\ge 1`: the
            error at time :math:`t` is weighted by :math:`\\min(\\max(1, 1/\\mathrm{SNR}(t)), c)`, with
            :math:`\\mathrm{SNR} = \\alpha_t^2 / \\sigma_t^2`: the truncated-SNR weighting of Salimans & Ho (2022,
            §4), :math:`\\max(\\mathrm{SNR}, 1)` in units of the predicted clean sample, capped at :math:`c`. The
            noisiest times, where an error in the predicted noise is multiplied by :math:`1/\\alpha_t` in the
            predicted clean sample, then weigh up to :math:`c` times more (docs/mnist.md: a briefly trained image
            model stops painting tinted backgrounds).
        """
        net = self.network if network is None else network
        sched = self.schedule
        t = sched.t_min + (sched.t_max - sched.t_min) * torch.rand(x0.shape[0], device=x0.device, dtype=x0.dtype)
        eps = torch.randn_like(x0)
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        xt = per_batch(alpha, self.event_shape) * x0 + per_batch(sigma, self.event_shape) * eps
        err = sum_event((net(xt, t) - eps) ** 2, self.event_shape)
        if snr_truncation is None:
            return err.mean()
        weight = ((sigma / alpha) ** 2).clamp(min=1.0, max=_check_snr_truncation(snr_truncation))
        return (weight * err).mean()

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """:math:`\\bar\\theta \\leftarrow d\\, \\bar\\theta + (1 - d)\\, \\theta` (buffers are copied)."""
        ema_update_(self.ema_network, self.network, decay)

    def training_loss(
        self, draw: Callable[[int], torch.Tensor], batch_size: int, snr_truncation: Optional[float] = None
    ) -> torch.Tensor:
        """One step's loss: :meth:`loss` on ``draw(batch_size)``, a batch of training points ``(batch_size, D)``."""
        return self.loss(draw(batch_size), snr_truncation=snr_truncation)

    def fit(
        self,
        data: Data,
        steps: int = 5000,
        batch_size: int = 256,
        lr: float = 1e-3,
        *,
        ema_decay: float = 0.999,
        seed: Optional[int] = None,
        progress_bar: bool = True,
        callback: Optional[Callable[[int, "ScoreModel"], None]] = None,
        callback_every: int = 1000,
        time_limit: Optional[float] = None,
        lr_final_factor: float = 1.0,
        snr_truncation: Optional[float] = None,
    ) -> "ScoreModel":
        """Train by denoising score matching with Adam and an EMA of the weights, in place (the loop is
        :func:`~pyro_sculpt.train.fit_loop`).

        The EMA decay is warmed up as :math:`\\min(d, (1 + k) / (10 + k))` at step :math:`k`, so that short
        runs average recent weights rather than the initialisation. The history records a running average of the
        loss.

        A seed starts a fresh, reproducible run: the network is re-initialised from it (and the EMA weights reset to
        the fresh ones), so that the trained weights do not depend on the generators' state when the model was
        built. Without a seed, training continues from the current weights and their average.

        :param data: training points, a tensor ``(N, D)`` (minibatches drawn with replacement), or a function
            ``data(batch_size) -> (batch_size, D)`` (e.g. :meth:`GaussianMixtureOracle.sample`).
        :param steps: optimisation steps.
        :param batch_size: points per step.
        :param lr: Adam's learning rate.
        :param ema_decay: :math:`d \\in [0, 1)`.
        :param seed: see above.
        :param progress_bar: show a progress bar.
        :param callback: called as ``callback(step, self)`` every ``callback_every`` steps and at the end.
        :param callback_every: see ``callback``.
        :param time_limit: stop after this many seconds.
        :param lr_final_factor: cosine decay of the learning rate to this fraction, in (0, 1] (1, the default, keeps
            it constant).
        :returns: ``self``.
        :param snr_truncation: the time weighting of :meth:`loss` (``None``: uniform; a number >= 1: truncated SNR,
            capped there).
        :raises FloatingPointError: when the loss becomes non-finite (the message names the step).
        """
        if snr_truncation is not None:
            _check_snr_truncation(snr_truncation)
        check_positive_int("batch_size", batch_size)
        dev = self.device
        if isinstance(data, torch.Tensor):
            check_points(data, self.event_shape, "data")
            if data.dim() != 1 + len(self.event_shape) or data.shape[0] < 1:
                raise ValueError(f"data must have shape (N, {_entries(self)}) with N >= 1, got {tuple(data.shape)}")
            if not torch.isfinite(data).all():
                raise ValueError("data must be finite")
            table = data.detach().to(device=dev, dtype=self.dtype)  # the network's (float64 networks train too)

            def draw(b: int) -> torch.Tensor:
                return table[torch.randint(0, table.shape[0], (b,), device=dev)]

        elif callable(data):

            def draw(b: int) -> torch.Tensor:
                x = data(b)
                if not isinstance(x, torch.Tensor) or x.shape != (b,) + tuple(self.event_shape):
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(f"data({b}) must return a tensor of shape ({b}, {_entries(self)}), got {shape}")
                return x.detach().to(device=dev, dtype=self.dtype)

        else:
            raise TypeError(
                f"data must be a tensor (N, {_entries(self)}) or a function of the batch size, "
                f"got {type(data).__name__}"
            )
        running: Optional[float] = None

        def loss(state: TrainState):
            nonlocal running
            value = self.training_loss(draw, state.batch_size, snr_truncation)  # this process's share
            v = float(value.detach())
            running = v if running is None else 0.98 * running + 0.02 * v
            return value, {"loss": running}

        return fit_loop(
            self,
            loss,
            param_groups=[{"params": self.network.parameters(), "lr": lr, "name": "lr"}],
            steps=steps,
            lr_final_factor=lr_final_factor,
            ema=EMA(self.network, ema_decay, target=self.ema_network, warmup=True),
            seed=seed,
            progress_bar=progress_bar,
            desc="score matching",
            callback=callback,
            callback_every=callback_every,
            time_limit=time_limit,
            batch_size=batch_size,
        )

    # ----- checkpoints -----

    checkpoint_format = "ScoreModel"
    checkpoint_version = CHECKPOINT_VERSION

    def checkpoint_payload(self) -> dict:
        """The networks (current and EMA), schedule and history (format version :data:`CHECKPOINT_VERSION`)."""
        return {
            "dim": self.dim,
            "event_shape": list(self.event_shape),
            "schedule": self.schedule.config(),
            "network": self._network_config(),
            "state_dict": cpu_state_dict(self.network),
            "ema_state_dict": cpu_state_dict(self.ema_network),
            "use_ema": self.use_ema,
            "history": self.history,
            "ema_updates": int(getattr(self.ema_network, "ema_updates", 0)),
        }

    def _network_config(self) -> Optional[dict]:
        """The default network's configuration, ``None`` for a custom network (loading then needs ``network=``)."""
        return self.network.config() if isinstance(self.network, (ScoreMLP, UNet)) else None

    @classmethod
    def _from_checkpoint(
        cls,
        path: Union[str, Path],
        data: dict,
        *,
        network: Optional[nn.Module] = None,
        dim: Optional[int] = None,
        device: DeviceLike = None,
    ) -> "ScoreModel":
        """``ScoreModel.load(path, *, network=None, dim=None, device=None)``: load a checkpoint written by
        :meth:`save`.

        :param network: an (untrained) network of the saved architecture, required when the model was saved
            with a custom network (any but a :class:`~pyro_sculpt.nn.ScoreMLP` or :class:`~pyro_sculpt.nn.UNet`,
            which are rebuilt from their configuration).
        :param dim: the data dimension expected by the caller (checked against the checkpoint's).
        :param device: where to put the loaded model.
        :raises ValueError: for a file that is not a ScoreModel checkpoint (for instance a GFlowNet's or a
            classifier's), another format version, or another data dimension.
        """
        if dim is not None and dim != data["dim"]:
            raise ValueError(f"checkpoint {path} is a model of dimension {data['dim']}, but dim={dim} was expected")
        schedule = schedule_from_config(data["schedule"])
        cfg = data.get("network")
        if network is None and cfg is not None and cfg.get("type") == "UNet":
            network = UNet(**{k: v for k, v in cfg.items() if k != "type"})
        if network is None:
            if cfg is None:
                raise ValueError(f"checkpoint {path} was saved with a custom network: pass network=...")
            cfg = dict(cfg)
            cfg.pop("type", None)
            kwargs = {k: v for k, v in cfg.items() if k != "dim"}
            kwargs.setdefault("event_shape", data.get("event_shape"))
            model = cls(data["dim"], schedule, **kwargs)
        else:
            model = cls(data["dim"], schedule, event_shape=data.get("event_shape"), network=network)
        try:
            model.network.load_state_dict(data["state_dict"])
            model.ema_network.load_state_dict(data["ema_state_dict"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match the network: {err}") from None
        model.use_ema = bool(data.get("use_ema", True))
        model.history = list(data.get("history", []))
        model.ema_network.ema_updates = int(data.get("ema_updates", 0))
        model.network.eval()
        return model.to(as_device(device))


def _entries(model: ScoreModel) -> str:
    """The event shape of ``model`` as the entries of a shape in messages (``"2"``, ``"3, 28, 28"``)."""
    return ", ".join(str(s) for s in model.event_shape)
