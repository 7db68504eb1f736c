"""A time-conditioned observation classifier for diffusion bases, trained from sampled reverse chains
(Garipov et al. 2023, §4.2 and Appendix; docs/math.md §1.2, §1.3).

The classifier answers, for a batch of points :math:`x` at diffusion times :math:`t` (or terminal points),

* terminal :math:`x` (a final sample): logits :math:`\\ell_i(x) = \\log p_i(x) + c(x)` over the :math:`m` bases, from
  which every observation's posterior follows for any prior
  (:func:`~pyro_sculpt.sculpting.observations.terminal_log_joint`);
* a noisy :math:`x_t` of a reverse chain: the joint :math:`Q(y_1, \\dots, y_n \\mid x_t)`, where :math:`y_1` is the
  base that generates the chain and :math:`y_{2..n}` are observations of its final sample.

It has the interface of the exact :class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier` (``log_joint(x, t, obs=)``,
``terminal_logits``, ``log_prob_first``, ``log_prob``, ``grad_log_prob``), and the training entry point, checkpoints and
loss of the GFlowNet :class:`~pyro_sculpt.sculpting.ObservationClassifier` (whose target weights it reuses), and the
training loop of every model (:func:`~pyro_sculpt.train.fit_loop`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from pyro_sculpt.diffusion.model import batch_shape_of, check_points, describe_event, resolve_event_shape, time_like
from pyro_sculpt.diffusion.schedules import NoiseSchedule, TimeLike, schedule_from_config
from pyro_sculpt.nn import (
    MLP,
    ConvClassifierNet,
    SinusoidalTimeEmbedding,
    check_network,
    observation_output_size,
    split_observation_output,
)
from pyro_sculpt.sculpting.diffusion.bases import (
    DiffusionBase,
    check_diffusion_bases,
    sample_forward_pairs,
    sample_reverse_chains,
)
from pyro_sculpt.sculpting.observations import (
    Observations,
    check_classifier_observations,
    reweight_first,
    target_weights,
    terminal_log_joint,
)
from pyro_sculpt.train.checkpoint import Checkpointable, cpu_state_dict
from pyro_sculpt.train.loop import EMA, TrainState, fit_loop
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int, logit

CHECKPOINT_KIND = "DiffusionObservationClassifier"
CHECKPOINT_VERSION = 1


class DiffusionObservationClassifier(Checkpointable, nn.Module):
    """A learned, time-conditioned observation classifier :math:`Q(y_1, \\dots, y_n \\mid x_t)` for diffusion bases.

    One network (default an MLP) on ``[x, e(t), terminal flag, logit(alpha)]`` (:math:`e` the sinusoidal embedding of
    :class:`~pyro_sculpt.diffusion.SinusoidalTimeEmbedding`) with :math:`m + m^n` outputs: the terminal logits
    :math:`\\ell_i(x)` and the non-terminal joint. Terminal points are the bases' final samples; non-terminal points are
    the noisy states of their reverse chains at diffusion times :math:`t \\le` ``max_time`` (0.7 in the reference
    implementation: later states are nearly pure noise). At :math:`t >` ``max_time`` the network is evaluated at
    ``max_time`` (its time input is clamped), but guidance does not use it there
    (:func:`~pyro_sculpt.sculpting.diffusion.guidance_terms`: prior weights, no guidance term); ``max_time=1`` trains
    on every noise level instead.

    Observation conventions are those of :class:`~pyro_sculpt.sculpting.Observations`: :math:`y_1` has the prior
    ``weights`` (applied by Bayes' rule, the network is trained with a uniform one) and :math:`y_{2..n}` the prior
    :math:`(\\alpha, 1 - \\alpha)` (two bases, ``alpha_conditioned``) or uniform.

    :param dim: data dimension :math:`D` of vector bases; give this or ``event_shape``.
    :param num_models: :math:`m \\ge 2`.
    :param num_observations: :math:`n \\ge 1`.
    :param schedule: the bases' noise schedule (checked against the bases; ``None``: taken from the bases by
        :meth:`fit`).
    :param alpha_conditioned: feed :math:`\\mathrm{logit}\\,\\alpha` so that one classifier serves every
        :math:`\\alpha` of the parameterised operations (two models only).
    :param max_time: largest diffusion time of the training states, in (0, 1].
    :param hidden: hidden width of the default network.
    :param layers: hidden layers of the default network.
    :param time_embedding_dim: size of :math:`e(t)`.
    :param network: the network, mapping rows of ``D + time_embedding_dim + 1 (+ 1 with alpha_conditioned)``
        features to :math:`m + m^n` outputs; default an :class:`~pyro_sculpt.nn.MLP` with ``layers`` hidden layers of
        width ``hidden``.
    :param device: where the weights live.
    :param event_shape: the bases' event shape, e.g. ``(3, 28, 28)`` (the MLP reads the flattened event; with
        ``dim``, it must have ``dim`` entries).
    :raises ValueError: for a network of the wrong input or output size.

    Build one for given bases with :meth:`for_bases` (it remembers them) and train it in place with :meth:`fit`.
    Checkpoints: :meth:`save` and ``DiffusionObservationClassifier.load(path, *, dim=None, num_models=None,
    num_observations=None, network=None, device=None)`` (:meth:`_from_checkpoint`).

    Example::

        s1, s2 = AncestralSampler(model1, 200), AncestralSampler(model2, 200)
        clf = DiffusionObservationClassifier.for_bases([s1, s2], num_observations=2).fit(steps=3000, seed=0)
        hm = ps.harmonic_mean(s1, s2, clf)             # guided reverse diffusion
        x = hm.sample((4000,))
        clf.save("clf.pt"); clf = DiffusionObservationClassifier.load("clf.pt")
    """

    #: the family this classifier guides (for messages)
    guides = "diffusion models"
    checkpoint_format = CHECKPOINT_KIND
    checkpoint_version = CHECKPOINT_VERSION

    def __init__(
        self,
        dim: Optional[int] = None,
        num_models: int = 2,
        num_observations: int = 2,
        *,
        event_shape: Optional[Sequence[int]] = None,
        schedule: Optional[NoiseSchedule] = None,
        alpha_conditioned: bool = False,
        max_time: float = 0.7,
        hidden: int = 256,
        layers: int = 3,
        time_embedding_dim: int = 32,
        network: Optional[nn.Module] = None,
        device: DeviceLike = None,
    ):
        super().__init__()
        self.event_shape = resolve_event_shape(dim, event_shape)
        self.dim = self.event_shape.numel()
        self.num_models = check_positive_int("num_models", num_models, 2)
        self.num_observations = check_positive_int("num_observations", num_observations, 1)
        if alpha_conditioned and num_models != 2:
            raise ValueError(f"alpha_conditioned needs num_models=2, got {num_models}")
        if schedule is not None and not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule or None, got {type(schedule).__name__}")
        max_time = float(max_time)
        if not 0.0 < max_time <= 1.0:
            raise ValueError(f"max_time must lie in (0, 1], got {max_time!r}")
        self.schedule = schedule
        self.alpha_conditioned = bool(alpha_conditioned)
        self.supports_alpha = self.alpha_conditioned
        self.max_time = max_time
        self.hidden, self.layers = check_positive_int("hidden", hidden), check_positive_int("layers", layers, 0)
        self.time_embedding_dim = check_positive_int("time_embedding_dim", time_embedding_dim, 2)
        self.embed = SinusoidalTimeEmbedding(time_embedding_dim)
        in_dim = self.dim + time_embedding_dim + 1 + int(self.alpha_conditioned)
        out_dim = observation_output_size(num_models, num_observations)
        self.custom_network = network is not None
        self.net = network if network is not None else MLP(in_dim, out_dim, hidden, layers)
        self.history: list[dict] = []
        self.bases: Optional[list] = None
        self.to(as_device(device))
        check_network(self.net, in_dim, out_dim, "network", device)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def __repr__(self) -> str:
        return (
            f"DiffusionObservationClassifier(dim={self.dim}, num_models={self.num_models}, "
            f"num_observations={self.num_observations}, alpha_conditioned={self.alpha_conditioned}, "
            f"max_time={self.max_time})"
        )

    # ----- the network -----

    def _features(self, x: torch.Tensor, t: torch.Tensor, terminal: torch.Tensor, logit_alpha) -> torch.Tensor:
        """Rows ``[x, e(min(t, max_time)), flag, logit_alpha]`` (``x`` flattened over the event, ``terminal`` of its
        batch shape); terminal rows take :math:`t = 0` and :math:`\\mathrm{logit}\\,\\alpha = 0` (the terminal head
        ignores both)."""
        dtype = next(self.net.parameters()).dtype
        x = x.reshape(terminal.shape + (self.dim,)).to(dtype)
        tt = torch.where(terminal, torch.zeros_like(t), t.clamp(max=self.max_time)).to(dtype)
        feats = [x, self.embed(tt), terminal.to(dtype).unsqueeze(-1)]
        if self.alpha_conditioned:
            la = torch.as_tensor(logit_alpha, dtype=dtype, device=x.device).expand(terminal.shape)
            feats.append(torch.where(terminal, torch.zeros_like(la), la).unsqueeze(-1))
        return torch.cat(feats, -1)

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_observation_output(out, self.num_models, self.num_observations)

    def _obs(self, weights=None, alpha=None, obs: Any = None) -> Observations:
        if obs is not None:
            weights = getattr(obs, "weights", None) if weights is None else weights
            alpha = getattr(obs, "alpha", None) if alpha is None else alpha
        if isinstance(alpha, torch.Tensor):
            if alpha.dim() != 0:
                raise ValueError(f"alpha must be a number in (0, 1), got a tensor of shape {tuple(alpha.shape)}")
            alpha = float(alpha)
        if isinstance(weights, torch.Tensor):
            weights = weights.tolist()
        o = Observations.build((None,) * self.num_observations, self.num_models, weights, alpha)
        self.check_observations(o)
        return o

    def check_observations(self, obs: Observations) -> None:
        """Raise a :class:`ValueError` if this classifier cannot answer ``obs``."""
        check_classifier_observations(obs, self.num_models, self.num_observations, self.supports_alpha)

    # ----- the interface of GaussianMixtureClassifier -----

    def terminal_logits(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\ell_i(x) = \\log p_i(x) + c(x)` of a final sample ``x`` ``batch_shape + event_shape``, shape
        ``batch_shape + (m,)``."""
        check_points(x, self.event_shape, "x")
        batch = batch_shape_of(x, self.event_shape)
        flag = torch.ones(batch, dtype=torch.bool, device=x.device)
        zero = torch.zeros(batch, dtype=x.dtype, device=x.device)
        out = self.net(self._features(x, zero, flag, 0.0))
        return out[..., : self.num_models].to(x.dtype)

    def log_joint(
        self, x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None, alpha=None, obs: Any = None
    ) -> torch.Tensor:
        """:math:`\\log Q(y_1, \\dots, y_n \\mid x_t)` for every configuration, in ONE network evaluation.

        :param x: ``batch_shape + event_shape``.
        :param t: diffusion time (a float or a tensor broadcasting against ``batch_shape``); ``None``: ``x`` is a
            final sample (the terminal head, observations independent given ``x``).
        :param weights: prior of :math:`y_1` (the mixture weights), default uniform.
        :param alpha: prior :math:`(\\alpha, 1 - \\alpha)` of :math:`y_{2..n}` (two bases), default uniform.
        :param obs: an :class:`~pyro_sculpt.sculpting.Observations` (or any object with ``weights`` and ``alpha``)
            supplying the priors.
        :returns: ``batch_shape + (m, ..., m)`` with ``n`` trailing dims.
        """
        check_points(x, self.event_shape, "x")
        o = self._obs(weights, alpha, obs)
        log_priors = o.log_priors(x.device, x.dtype)
        if t is None:
            return terminal_log_joint(self.terminal_logits(x), log_priors)
        tt = time_like(t, x, self.event_shape)
        flag = torch.zeros(batch_shape_of(x, self.event_shape), dtype=torch.bool, device=x.device)
        la = logit(o.alpha_value) if (self.alpha_conditioned and o.alpha is not None) else 0.0
        _, joint = self._split(self.net(self._features(x, tt, flag, la)))
        m, n = self.num_models, self.num_observations
        uniform = torch.full((m,), -math.log(m), dtype=x.dtype, device=x.device)
        return reweight_first(joint.to(x.dtype), n, log_priors[0], uniform)

    def log_prob_first(self, x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None) -> torch.Tensor:
        """:math:`\\log Q(y_1 = i \\mid x_t)`, shape ``(..., m)`` (``t=None``: terminal)."""
        joint = self.log_joint(x, t, weights=weights)
        n = self.num_observations
        return joint if n == 1 else torch.logsumexp(joint.flatten(-(n - 1)), -1)

    def guidance_log_probs(
        self, x: torch.Tensor, t: Optional[TimeLike], obs: Observations
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(\\log Q(y_1 = \\cdot \\mid x_t),\\ \\log Q(y \\mid x_t))` for the observations ``obs``, shapes
        ``(..., m)`` and ``(...)``, from one network evaluation (differentiable in ``x``)."""
        joint = self.log_joint(x, t, obs=obs)
        n = self.num_observations
        first = joint if n == 1 else torch.logsumexp(joint.flatten(-(n - 1)), -1)
        return first, obs.select(joint)

    def _resolve(self, y: Any, weights, alpha) -> Observations:
        if isinstance(y, Observations):
            weights = y.weights if weights is None else weights
            alpha = y.alpha if alpha is None else alpha
            y = y.y
        if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
            raise ValueError(f"y must be a sequence of {self.num_observations} base indices or None, got {y!r}")
        y = tuple(int(v) if isinstance(v, torch.Tensor) else v for v in y)
        o = Observations.build(y, self.num_models, weights, alpha)
        self.check_observations(o)
        return o

    def log_prob(
        self, y: Any, x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None, alpha=None
    ) -> torch.Tensor:
        """:math:`\\log Q(y \\mid x_t)` for one configuration ``y`` (entries ``None`` are summed out), shape
        ``x.shape[:-1]``. ``y`` may be an :class:`~pyro_sculpt.sculpting.Observations`."""
        o = self._resolve(y, weights, alpha)
        return o.select(self.log_joint(x, t, obs=o))

    def grad_log_prob(
        self, y: Any, x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None, alpha=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`\\log Q(y \\mid x_t)` and :math:`\\nabla_{x_t} \\log Q(y \\mid x_t)` (one forward and one backward
        pass; works under :func:`torch.no_grad`). Returns detached tensors of shapes ``x.shape[:-1]`` and
        ``x.shape``."""
        o = self._resolve(y, weights, alpha)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = o.select(self.log_joint(xg, t, obs=o))
            (g,) = torch.autograd.grad(lp.sum(), xg)
        return lp.detach(), g

    # ----- training (docs/math.md §1.2, §1.3) -----

    @classmethod
    def for_bases(
        cls,
        bases: Sequence[DiffusionBase],
        num_observations: int = 2,
        *,
        alpha_conditioned: bool = False,
        max_time: float = 0.7,
        hidden: int = 256,
        layers: int = 3,
        time_embedding_dim: int = 32,
        network: Optional[nn.Module] = None,
        device: DeviceLike = None,
    ) -> "DiffusionObservationClassifier":
        """An untrained classifier for ``bases`` (diffusion samplers: their data dimension and schedule, one output
        per base, on the first base's device unless ``device`` is given); it remembers the bases, on which
        :meth:`fit` trains by default.

        Example::

            clf = DiffusionObservationClassifier.for_bases([s1, s2], 2, alpha_conditioned=True).fit(steps=3000, seed=0)
        """
        samplers = check_diffusion_bases(bases)
        clf = cls(
            None,
            len(samplers),
            num_observations,
            event_shape=samplers[0].event_shape,
            schedule=samplers[0].schedule,
            alpha_conditioned=alpha_conditioned,
            max_time=max_time,
            hidden=hidden,
            layers=layers,
            time_embedding_dim=time_embedding_dim,
            network=network,
            device=device if device is not None else samplers[0].device,
        )
        clf._check_training_bases(samplers)
        clf.bases = samplers
        return clf

    def _check_training_bases(self, samplers: list) -> None:
        if len(samplers) != self.num_models:
            raise ValueError(f"classifier is for {self.num_models} base models, got {len(samplers)} bases")
        if samplers[0].event_shape != self.event_shape:
            raise ValueError(
                f"bases have {describe_event(samplers[0].event_shape)}, but the classifier has "
                f"{describe_event(self.event_shape)}"
            )
        if self.num_observations > 1:
            for k, s in enumerate(samplers):
                if any(s.step_coefficients(t)[2] == 0.0 for t in range(1, s.max_steps)):
                    raise ValueError(
                        f"bases[{k}] is {s!r}, a deterministic (ODE) sampler: its chains tie the final sample to "
                        "every noisy state, so the non-terminal head would not learn Q(y | x_t); train on a "
                        "stochastic sampler of the same model (AncestralSampler, EulerMaruyamaSampler, "
                        "DDIMSampler(eta > 0), PredictorCorrectorSampler) and compose with any sampler"
                    )
        if self.schedule is not None and samplers[0].schedule != self.schedule:
            raise ValueError(
                f"bases use schedule {samplers[0].schedule!r}, but the classifier was built for {self.schedule!r}"
            )

    def draw_chains(
        self, bases: Sequence[DiffusionBase], num_chains: int, data: Optional[Sequence[torch.Tensor]] = None
    ) -> list:
        """A pool of ``num_chains`` reverse chains per base, sampled with each base's own sampler (a loop over bases;
        every chain of a base is batched): per base ``(states, times, final)`` on the classifier's device. With
        ``data`` (checked by :meth:`check_data`), final samples drawn from each base's data and their forward-noised
        states instead (:func:`~pyro_sculpt.sculpting.diffusion.bases.sample_forward_pairs`)."""
        dtype = next(self.net.parameters()).dtype
        pool = []
        for k, s in enumerate(bases):
            if data is None:
                states, times, final = sample_reverse_chains(s, num_chains, self.max_time)
            else:
                states, times, final = sample_forward_pairs(s, data[k], num_chains, self.max_time)
            pool.append((states.to(self.device, dtype), times.to(self.device, dtype), final.to(self.device, dtype)))
        return pool

    def check_data(self, data: Any) -> list[torch.Tensor]:
        """Check the training data of :meth:`fit`'s ``data`` argument: one tensor ``(N_k,) + event_shape`` of finite
        values per base; returns them on the classifier's device and dtype."""
        if isinstance(data, torch.Tensor) or not isinstance(data, (list, tuple)):
            raise TypeError(
                f"data must be a list of {self.num_models} tensors (one per base), got {type(data).__name__}"
            )
        if len(data) != self.num_models:
            raise ValueError(f"data must hold one tensor per base ({self.num_models}), got {len(data)}")
        dtype = next(self.net.parameters()).dtype
        out = []
        for k, x in enumerate(data):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"data[{k}] must be a tensor, got {type(x).__name__}")
            if x.dim() != len(self.event_shape) + 1 or tuple(x.shape[1:]) != tuple(self.event_shape) or not len(x):
                raise ValueError(
                    f"data[{k}] must have shape (N,) + {tuple(self.event_shape)} with N >= 1 (the classifier's "
                    f"{describe_event(self.event_shape)}), got {tuple(x.shape)}"
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"data[{k}] has non-finite values")
            out.append(x.to(self.device, dtype))
        return out

    def training_loss(
        self,
        pool: list,
        target: nn.Module,
        step: int,
        batch_size: int = 64,
        ramp: int = 3_000,
        logit_alpha_range: float = 3.5,
        states_per_chain: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step's loss on ``batch_size`` chains per base drawn from ``pool`` (:meth:`draw_chains`) and
        ``states_per_chain`` noisy states of each (see :meth:`fit`).

        :param target: the moving average :math:`\\bar Q` of the network (no gradient).
        :param step: the step, for the ramp of :math:`L_N`.
        :returns: ``(loss, L_T, L_N)``.
        """
        m, n = self.num_models, self.num_observations
        device = self.device
        dtype = next(self.net.parameters()).dtype
        k_states = states_per_chain
        label = torch.arange(m, device=device).repeat_interleave(batch_size)
        finals, noisy, noisy_t = [], [], []
        for states, times, final in pool:
            idx = torch.randint(0, final.shape[0], (batch_size,), device=device)
            col = torch.randint(0, times.shape[0], (batch_size, k_states), device=device)
            finals.append(final[idx])
            noisy.append(states[idx.unsqueeze(-1), col])  # (B, K, D)
            noisy_t.append(times[col])  # (B, K)
        x = torch.cat(finals, 0)  # (m B, D)
        xs = torch.cat(noisy, 0).reshape(-1, self.dim)  # (m B K, D)
        ts = torch.cat(noisy_t, 0).reshape(-1)
        la = None
        if self.alpha_conditioned:
            la = (torch.rand(m * batch_size, device=device, dtype=dtype) * 2 - 1) * logit_alpha_range
        flags = torch.ones(x.shape[0], dtype=torch.bool, device=device)
        zeros_t = torch.zeros(x.shape[0], dtype=dtype, device=device)
        with torch.no_grad():  # W(y) from the target network's terminal predictions
            t_logits = target(self._features(x, zeros_t, flags, 0.0))[..., :m]
            weights = target_weights(t_logits, label, n, la)  # (m B, m**n)
        la_rows = la.repeat_interleave(k_states) if la is not None else 0.0
        rows = torch.cat(
            [
                self._features(x, zeros_t, flags, 0.0),
                self._features(xs, ts, torch.zeros(xs.shape[0], dtype=torch.bool, device=device), la_rows),
            ],
            0,
        )
        out = self.net(rows)  # terminal and non-terminal rows in one call
        term_logits = out[: x.shape[0], :m]
        nt = torch.log_softmax(out[x.shape[0] :, m:], -1)  # (m B K, m**n)
        loss_t = torch.nn.functional.cross_entropy(term_logits, label)
        loss_n = -(weights.repeat_interleave(k_states, 0) * nt).sum(-1).mean()
        loss = loss_t + min(1.0, step / ramp if ramp else 1.0) * loss_n
        return loss, loss_t, loss_n

    def fit(
        self,
        bases: Optional[Sequence[DiffusionBase]] = None,
        steps: int = 15_000,
        batch_size: int = 64,
        lr: float = 1e-3,
        ramp: int = 3_000,
        ema_decay: float = 0.995,
        logit_alpha_range: float = 3.5,
        *,
        num_chains: int = 4096,
        refresh_every: Optional[int] = 1000,
        states_per_chain: int = 8,
        seed: Optional[int] = None,
        progress_bar: bool = True,
        callback: Optional[Callable[[int, "DiffusionObservationClassifier"], None]] = None,
        callback_every: int = 1000,
        time_limit: Optional[float] = None,
        lr_final_factor: float = 1.0,
        data: Optional[Sequence[torch.Tensor]] = None,
    ) -> "DiffusionObservationClassifier":
        """Train in place by the bootstrapped objective of Garipov et al. (2023) on reverse chains of the bases; the
        loop is :func:`~pyro_sculpt.train.fit_loop`.

        A pool of ``num_chains`` reverse chains per base is sampled with each base's own sampler (and resampled every
        ``refresh_every`` steps). Every step draws ``batch_size`` chains per base from the pool and, on each,
        ``states_per_chain`` of its noisy states at times :math:`t \\le` ``max_time``. For a chain of base :math:`k`
        ending in the final sample :math:`x`:

        .. math::

            L_T = -\\log Q(y_1 = k \\mid x), \\qquad
            L_N = -\\mathbb E_{x_t} \\sum_y W(y) \\log Q(y \\mid x_t), \\quad
            W = \\mathbb 1[y_1 = k] \\prod_{j \\ge 2} \\bar Q(y_j \\mid x),

        with :math:`\\bar Q` an exponential moving average of the classifier (no gradient; the weights are
        :func:`pyro_sculpt.sculpting.observations.target_weights`, shared with GFlowNets), and loss :math:`L_T +
        \\min(1, \\text{step}/\\text{ramp}) L_N` (:meth:`training_loss`). With ``alpha_conditioned``,
        :math:`\\mathrm{logit}\\,\\alpha \\sim U[-r, r]` per chain sets the prior of :math:`y_{2..n}`. The terminal
        and non-terminal rows go through the network in one batched call.

        A seed starts a fresh, reproducible run: the network is re-initialised from it, so that the trained weights
        do not depend on the generators' state when the classifier was built. Without a seed, training continues
        from the current weights.

        :param bases: the base samplers, in the order of the classifier's outputs; ``None``: those remembered by
            :meth:`for_bases` (bases given here are remembered for later calls).
        :param steps: optimisation steps.
        :param batch_size: chains per base per step.
        :param lr: Adam learning rate.
        :param ramp: steps of the linear ramp of the non-terminal loss.
        :param ema_decay: decay of the target network's moving average, in [0, 1).
        :param logit_alpha_range: :math:`r > 0`.
        :param num_chains: chains per base in the pool.
        :param refresh_every: resample the pool every this many steps (``None``: never).
        :param states_per_chain: noisy states per chain per step.
        :param seed: see above.
        :param progress_bar: show a progress bar.
        :param callback: ``callback(step, self)`` every ``callback_every`` steps and at the end.
        :param callback_every: see ``callback``.
        :param time_limit: stop after this many seconds.
        :param lr_final_factor: cosine decay of the learning rate to this fraction, in (0, 1] (1 keeps it constant).
        :param data: the training data of each base, ``[x_1, ..., x_m]`` with ``x_k`` of shape ``(N_k,) +
            event_shape``: train on final samples drawn from the data and their forward-noised states
            (:func:`~pyro_sculpt.sculpting.diffusion.bases.sample_forward_pairs`) instead of the bases' reverse
            chains. No base is sampled, so a pool costs nothing (refresh it often), and the classifier learns the
            composition of the data's distributions, which the bases approximate, rather than of the bases
            themselves: it cannot tell the bases apart by their artefacts (docs/mnist.md), nor correct for them.
            The bases still set the schedule and the time grid.
        :returns: ``self``.
        :raises FloatingPointError: when the loss becomes non-finite (the message names the step).
        """
        if bases is None:
            if self.bases is None:
                raise ValueError(
                    "fit needs bases: build the classifier with DiffusionObservationClassifier.for_bases(bases, ...) "
                    "or pass fit(bases=...)"
                )
            samplers = self.bases
        else:
            samplers = check_diffusion_bases(bases)
            self._check_training_bases(samplers)
        check_positive_int("batch_size", batch_size)
        check_positive_int("ramp", ramp, 0)
        check_positive_int("num_chains", num_chains)
        check_positive_int("states_per_chain", states_per_chain)
        if refresh_every is not None:
            check_positive_int("refresh_every", refresh_every)
        if not (logit_alpha_range > 0) or not math.isfinite(logit_alpha_range):
            raise ValueError(f"logit_alpha_range must be a finite number > 0, got {logit_alpha_range!r}")
        if data is not None:
            data = self.check_data(data)
        if self.schedule is None:
            self.schedule = samplers[0].schedule
        self.bases = samplers
        pool: list = []

        def loss(state: TrainState):
            if state.step == 1 or (refresh_every is not None and (state.step - 1) % refresh_every == 0):
                pool[:] = self.draw_chains(samplers, num_chains, data)
            value, loss_t, loss_n = self.training_loss(
                pool, state.ema, state.step, state.batch_size, ramp, logit_alpha_range, states_per_chain
            )
            return value, {"loss_terminal": loss_t, "loss_nonterminal": loss_n}

        return fit_loop(
            self,
            loss,
            param_groups=[{"params": self.net.parameters(), "lr": lr, "name": "lr"}],
            steps=steps,
            lr_final_factor=lr_final_factor,
            ema=EMA(self.net, ema_decay),
            seed=seed,
            progress_bar=progress_bar,
            desc="classifier",
            callback=callback,
            callback_every=callback_every,
            time_limit=time_limit,
            batch_size=batch_size,
        )

    # ----- checkpoints -----

    def checkpoint_payload(self) -> dict:
        """Weights and configuration (format version :data:`CHECKPOINT_VERSION`)."""
        return {
            "dim": self.dim,
            "event_shape": list(self.event_shape),
            "num_models": self.num_models,
            "num_observations": self.num_observations,
            "schedule": None if self.schedule is None else self.schedule.config(),
            "alpha_conditioned": self.alpha_conditioned,
            "max_time": self.max_time,
            "hidden": self.hidden,
            "layers": self.layers,
            "time_embedding_dim": self.time_embedding_dim,
            "custom_network": self.custom_network,
            "network_config": self.net.config() if isinstance(self.net, ConvClassifierNet) else None,
            "state_dict": cpu_state_dict(self.net),
            "history": self.history,
        }

    @classmethod
    def _from_checkpoint(
        cls,
        path: Union[str, Path],
        data: dict,
        *,
        dim: Optional[int] = None,
        num_models: Optional[int] = None,
        num_observations: Optional[int] = None,
        network: Optional[nn.Module] = None,
        device: DeviceLike = None,
    ) -> "DiffusionObservationClassifier":
        """``DiffusionObservationClassifier.load(path, *, dim=None, num_models=None, num_observations=None,
        network=None, device=None)``: load a checkpoint written by :meth:`save`.

        :param dim: the data dimension expected by the caller (checked).
        :param num_models: the number of bases expected (checked).
        :param num_observations: the number of observations expected (checked).
        :param network: an (untrained) network of the saved architecture, required when the classifier was saved
            with a custom network (a :class:`~pyro_sculpt.nn.ConvClassifierNet` is rebuilt from its configuration).
        :param device: where to put the loaded classifier.
        :raises ValueError: for a file that is not such a checkpoint (for instance a GFlowNet classifier's or a score
            model's), another format version, a classifier for another dimension or number of models, or a network
            that does not match.
        """
        for name, want in (("dim", dim), ("num_models", num_models), ("num_observations", num_observations)):
            if want is not None and want != data[name]:
                raise ValueError(f"checkpoint {path} is a classifier with {name}={data[name]}, but {want} was expected")
        cfg = data.get("network_config")
        if network is None and cfg is not None and cfg.get("type") == "ConvClassifierNet":
            network = ConvClassifierNet(**{k: v for k, v in cfg.items() if k != "type"})
        if data.get("custom_network", False) and network is None:
            raise ValueError(f"checkpoint {path} was saved with a custom network: pass network=...")
        schedule = None if data.get("schedule") is None else schedule_from_config(data["schedule"])
        clf = cls(
            data["dim"],
            data["num_models"],
            data["num_observations"],
            schedule=schedule,
            event_shape=data.get("event_shape"),
            alpha_conditioned=data["alpha_conditioned"],
            max_time=data["max_time"],
            hidden=data["hidden"],
            layers=data["layers"],
            time_embedding_dim=data["time_embedding_dim"],
            network=network,
        )
        try:
            clf.net.load_state_dict(data["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match the network: {err}") from None
        clf.history = list(data.get("history", []))
        clf.net.eval()
        return clf.to(as_device(device))
