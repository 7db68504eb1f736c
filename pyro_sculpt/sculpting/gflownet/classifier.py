"""Observation classifiers :math:`Q(y_1, \\dots, y_n \\mid s)` for GFlowNet bases (Garipov et al. 2023, §4.1, §4.3).

A classifier answers two questions in one batched call, for a batch of states each flagged terminal or not:

* terminal :math:`x`: logits :math:`\\ell_i(x) = \\log p_i(x) + c(x)` over the :math:`m` bases, from which every
  observation's posterior follows for any prior (:func:`~pyro_sculpt.sculpting.observations.terminal_log_joint`);
* non-terminal :math:`s`: the joint :math:`Q(y_1, \\dots, y_n \\mid s)`, where :math:`y_1` is the base that is
  generating the trajectory and :math:`y_{2..n}` are observations of its (future) terminal state.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess, parameters_key
from pyro_sculpt.gflownets.registry import env_from_config
from pyro_sculpt.nn import MLP, check_network, observation_output_size, split_observation_output
from pyro_sculpt.sculpting.gflownet.bases import base_processes, check_bases  # noqa: F401 - check_bases re-exported
from pyro_sculpt.sculpting.observations import (
    Observations,
    check_classifier_observations,
    reweight_first,
    target_weights,
    terminal_log_joint,
)
from pyro_sculpt.train.checkpoint import Checkpointable, check_env, cpu_state_dict
from pyro_sculpt.train.loop import EMA, TrainState, fit_loop
from pyro_sculpt.utils import as_device, check_number, check_positive_int, logit

CHECKPOINT_VERSION = 1


class Classifier(nn.Module):
    """Interface of observation classifiers over the states of a :class:`DiscreteEnv`.

    :param env: the environment of the bases.
    :param num_models: :math:`m`, the number of bases.
    :param num_observations: :math:`n`, the number of observation variables of the joint head.
    """

    #: the family this classifier guides (for messages)
    guides = "GFlowNets"
    #: whether the non-terminal head accepts any prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}`
    supports_alpha: bool = False
    #: whether the classifier is a function of its ``bases`` (computed from them, not trained): it then fits no others
    defined_by_bases: bool = False

    def __init__(self, env: DiscreteEnv, num_models: int, num_observations: int):
        super().__init__()
        self.env = env
        self.num_models = check_positive_int("num_models", num_models, 2)
        self.num_observations = check_positive_int("num_observations", num_observations, 1)

    @abstractmethod
    def raw(self, states: torch.Tensor, terminal: torch.Tensor, obs: Observations):
        """One batched evaluation: ``(terminal_logits (..., m), nonterminal_log_joint (..., m, ..., m))`` at every
        row, with :math:`y_1` uniform and :math:`y_{2..n}` of prior ``obs``."""

    def check_observations(self, obs: Observations) -> None:
        """Raise a :class:`ValueError` if this classifier cannot answer ``obs``."""
        check_classifier_observations(obs, self.num_models, self.num_observations, self.supports_alpha)

    def log_joint(self, states: torch.Tensor, terminal: torch.Tensor, obs: Observations) -> torch.Tensor:
        """:math:`\\log Q(y_1, \\dots, y_n \\mid s)` under the priors of ``obs``, in ONE batched evaluation.

        :param states: ``(..., state_dim)``.
        :param terminal: ``(...)`` booleans: the row is a terminal :math:`x` (else a state of a trajectory).
        :returns: ``(..., m, ..., m)`` with ``n`` trailing dims.
        """
        n, m = self.num_observations, self.num_models
        term_logits, nt = self.raw(states, terminal, obs)
        log_priors = obs.log_priors(states.device, term_logits.dtype)
        term = terminal_log_joint(term_logits, log_priors)
        uniform = torch.full((m,), -math.log(m), dtype=nt.dtype, device=nt.device)
        nt = reweight_first(nt, n, log_priors[0], uniform)
        return torch.where(terminal.reshape(terminal.shape + (1,) * n), term, nt)

    def terminal_logits(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\ell_i(x) = \\log p_i(x) + c(x)`, shape ``(..., m)``.

        :raises ValueError: if ``x`` are not states of the classifier's environment."""
        self.env.validate_states(x, "x")
        obs = Observations.build((None,) * self.num_observations, self.num_models)
        return self.raw(x, torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device), obs)[0]


class ObservationClassifier(Checkpointable, Classifier):
    """A learned classifier: one network on ``[encode(s), terminal flag, logit(alpha)]`` with :math:`m + m^n` outputs
    (the terminal logits and the non-terminal joint), trained as in Garipov et al. (2023), Algorithm 1 / §4.3.

    Build one for given bases with :meth:`for_bases` (it remembers them) and train it in place with :meth:`fit`.

    :param env: the environment.
    :param num_models: :math:`m`.
    :param num_observations: :math:`n`.
    :param alpha_conditioned: feed :math:`\\mathrm{logit}\\,\\alpha` to the network so that one classifier serves
        every :math:`\\alpha` of the parameterised operations (two models only).
    :param hidden: hidden width of the default network.
    :param layers: hidden layers of the default network.
    :param network: the network, mapping rows of ``env.feature_dim + 1 (+ 1 with alpha_conditioned)`` features to
        :math:`m + m^n` outputs; default an :class:`~pyro_sculpt.nn.MLP` with ``layers`` hidden layers of width
        ``hidden``.
    :param device: where the network lives.
    :raises ValueError: for a network of the wrong input or output size.

    Checkpoints: :meth:`save` and ``ObservationClassifier.load(path, env=None, device=None, *, network=None)``
    (:meth:`_from_checkpoint`).

    Example::

        clf = ObservationClassifier.for_bases([p1, p2], num_observations=2).fit(steps=15_000)
        hm = harmonic_mean(p1, p2, clf)
    """

    checkpoint_format = "ObservationClassifier"
    checkpoint_version = CHECKPOINT_VERSION

    def __init__(
        self,
        env: DiscreteEnv,
        num_models: int = 2,
        num_observations: int = 2,
        *,
        alpha_conditioned: bool = False,
        hidden: int = 256,
        layers: int = 2,
        network: Optional[nn.Module] = None,
        device=None,
    ):
        super().__init__(env, num_models, num_observations)
        if alpha_conditioned and num_models != 2:
            raise ValueError(f"alpha_conditioned needs num_models=2, got {num_models}")
        self.alpha_conditioned = bool(alpha_conditioned)
        self.supports_alpha = self.alpha_conditioned
        self.hidden, self.layers = hidden, layers
        in_dim = env.feature_dim + 1 + int(self.alpha_conditioned)
        out_dim = observation_output_size(num_models, num_observations)
        self.custom_network = network is not None
        self.net = network if network is not None else MLP(in_dim, out_dim, hidden, layers)
        if device is not None:
            self.to(as_device(device))
        check_network(self.net, in_dim, out_dim, "network", device)
        self.history: list[dict] = []
        self.bases: Optional[list[DiscretePolicyProcess]] = None

    @classmethod
    def for_bases(
        cls, bases: Sequence[DiscretePolicyProcess], num_observations: int = 2, *, device=None, **options: Any
    ) -> "ObservationClassifier":
        """An untrained classifier for ``bases`` (on their environment, one output per base, on the first base's
        device unless ``device`` is given); it remembers the bases, on which :meth:`fit` trains by default.

        :param options: the constructor's keyword arguments (``hidden``, ``layers``, ``network``,
            ``alpha_conditioned``; a subclass's own, e.g. ``child_network``).

        Example::

            clf = ObservationClassifier.for_bases([p1, p2], num_observations=2, hidden=128).fit(steps=2000)
        """
        procs = base_processes(bases)
        device = device if device is not None else procs[0].device
        clf = cls(procs[0].env, len(procs), num_observations, device=device, **options)
        clf.bases = procs
        return clf

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _features(self, states, terminal, logit_alpha):
        feats = [self.env.encode(states), terminal.to(torch.get_default_dtype()).unsqueeze(-1)]
        if self.alpha_conditioned:
            la = torch.as_tensor(logit_alpha, dtype=feats[0].dtype, device=states.device)
            la = torch.where(terminal, torch.zeros_like(la), la.expand(terminal.shape))  # terminal head ignores it
            feats.append(la.unsqueeze(-1))
        return torch.cat(feats, -1)

    def _split(self, out: torch.Tensor):
        return split_observation_output(out, self.num_models, self.num_observations)

    def raw(self, states, terminal, obs):
        logit_alpha = 0.0
        if self.alpha_conditioned and obs.alpha is not None:
            logit_alpha = logit(obs.alpha_value)
        return self._split(self.net(self._features(states, terminal, logit_alpha)))

    # ----- training (docs/math.md §1.2) -----

    def _resolve_bases(self, bases) -> list:
        if bases is None:
            if self.bases is None:
                raise ValueError(
                    "fit needs bases: build the classifier with ObservationClassifier.for_bases(bases, ...) or pass "
                    "fit(bases=...)"
                )
            return self.bases
        procs = base_processes(bases)
        if not self.env.same_as(procs[0].env):
            raise ValueError(f"bases live on {procs[0].env.config()}, but the classifier on {self.env.config()}")
        if len(procs) != self.num_models:
            raise ValueError(f"classifier is for {self.num_models} base models, got {len(procs)} bases")
        return procs

    def training_loss(
        self,
        bases: Sequence[DiscretePolicyProcess],
        target: nn.Module,
        step: int,
        batch_size: int = 64,
        ramp: int = 3_000,
        logit_alpha_range: float = 3.5,
        nonterminal_reduction: str = "sum",
        tables: Optional[Sequence[Optional[torch.Tensor]]] = None,
        all_states: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step's loss on ``batch_size`` trajectories drawn from each base (see :meth:`fit`).

        :param target: the moving average :math:`\\bar Q` of the network (no gradient).
        :param step: the step, for the ramp of :math:`L_N`.
        :param tables: each base's log-policy on every state (``log_prob_table``) or ``None``, to sample from.
        :param all_states: every state of an enumerable environment: the network is evaluated once on them and the
            loss gathers from that table (an unconditioned classifier only).
        :returns: ``(loss, L_T, L_N)``.
        """
        env = self.env
        m, n = self.num_models, self.num_observations
        device = self.device
        stop = env.stop_action
        tables = tables if tables is not None else [None] * len(bases)
        batches = _pad([b.sample_trajectories(batch_size, 0.0, t) for b, t in zip(bases, tables)], stop)
        states = torch.cat([s for s, _, _ in batches], 0)  # (M*B, T+1, D)
        x = states[:, -1]
        label = torch.arange(m, device=device).repeat_interleave(batch_size)
        visited = torch.cat([_visited(a, act, stop) for _, a, act in batches], 0)
        # L_N summed over each trajectory's states (docs/math.md §1.2) or averaged over all visited states
        norm = visited.shape[0] if nonterminal_reduction == "sum" else visited.sum()
        la = None
        if self.alpha_conditioned:
            la = (torch.rand(m * batch_size, device=device) * 2 - 1) * logit_alpha_range
        with torch.no_grad():  # W(s; y) from the target network's terminal predictions
            flags = torch.ones(x.shape[:-1], dtype=torch.bool, device=device)
            t_logits = target(self._features(x, flags, la if la is not None else 0.0))[..., :m]
            weights = target_weights(t_logits, label, n, la)  # (M*B, m**n)
        if all_states is not None and not self.alpha_conditioned:
            both = torch.cat([all_states, all_states], 0)
            flags = torch.arange(2 * len(all_states), device=device) < len(all_states)
            out = self.net(self._features(both, flags, 0.0))
            term_table = out[: len(all_states), :m]
            nt_table = torch.log_softmax(out[len(all_states) :, m:], -1)
            term_logits = term_table[env.index(x)]
            idx = env.index(states)[visited]  # (V,)
            w_rows = weights.unsqueeze(1).expand(-1, states.shape[1], -1)[visited]
            acc = torch.zeros_like(nt_table).index_add_(0, idx, w_rows)
            loss_n = -(acc * nt_table).sum() / norm
        else:
            flags = torch.ones(x.shape[:-1], dtype=torch.bool, device=device)
            term_logits = self.net(self._features(x, flags, 0.0))[..., :m]
            s_vis = states[visited]
            la_vis = la.unsqueeze(1).expand(visited.shape)[visited] if la is not None else 0.0
            nf = torch.zeros(s_vis.shape[:-1], dtype=torch.bool, device=device)
            nt = torch.log_softmax(self.net(self._features(s_vis, nf, la_vis))[..., m:], -1)
            w_rows = weights.unsqueeze(1).expand(-1, states.shape[1], -1)[visited]
            loss_n = -(w_rows * nt).sum() / norm
        if getattr(self, "scores_children", False):  # the per-action head's L_C on the same weights
            actions = torch.cat([a for _, a, _ in batches], 0)
            active = torch.cat([act for _, _, act in batches], 0)
            loss_n = loss_n + self.child_loss(states, actions, active, weights, stop, norm)
        loss_t = torch.nn.functional.cross_entropy(term_logits, label)
        loss = loss_t + min(1.0, step / ramp if ramp else 1.0) * loss_n
        return loss, loss_t, loss_n

    def fit(
        self,
        bases: Optional[Sequence[DiscretePolicyProcess]] = None,
        steps: int = 15_000,
        batch_size: int = 64,
        lr: float = 1e-3,
        ramp: int = 3_000,
        ema_decay: float = 0.995,
        logit_alpha_range: float = 3.5,
        *,
        seed: Optional[int] = None,
        progress_bar: bool = True,
        callback: Optional[Callable[[int, "ObservationClassifier"], None]] = None,
        callback_every: int = 1000,
        time_limit: Optional[float] = None,
        lr_final_factor: float = 1.0,
        nonterminal_reduction: str = "sum",
    ) -> "ObservationClassifier":
        """Train in place by the bootstrapped objective of Garipov et al. (2023) (docs/math.md §1.2); the loop is
        :func:`~pyro_sculpt.train.fit_loop`.

        Every step samples ``batch_size`` trajectories from each base with its own policy. For a trajectory of base
        :math:`k` ending in :math:`x`:

        .. math::

            L_T = -\\log Q(y_1 = k \\mid x), \\qquad
            L_N = -\\sum_{s \\in \\tau} \\sum_y W(s; y) \\log Q(y \\mid s), \\quad
            W = \\mathbb 1[y_1 = k] \\prod_{j \\ge 2} \\bar Q(y_j \\mid x),

        with :math:`\\bar Q` an exponential moving average of the classifier (no gradient), and loss
        :math:`L_T + \\min(1, \\text{step}/\\text{ramp}) L_N`, averaged over trajectories
        (:meth:`training_loss`). With ``alpha_conditioned``, :math:`\\mathrm{logit}\\,\\alpha \\sim U[-r, r]` per
        trajectory sets the prior of :math:`y_{2..n}`. On an enumerable environment, an unconditioned classifier is
        evaluated once per step on every state and the loss gathers from that table (the same loss, fewer rows).

        A seed starts a fresh, reproducible run: the network is re-initialised from it, so that the trained weights
        do not depend on the generators' state when the classifier was built. Without a seed, training continues
        from the current weights.

        :param bases: the base models, in the order of the classifier's outputs; ``None``: those remembered by
            :meth:`for_bases` (bases given here are remembered for later calls).
        :param steps: optimisation steps.
        :param batch_size: trajectories per base per step.
        :param lr: Adam learning rate.
        :param ramp: steps of the linear ramp of the non-terminal loss.
        :param ema_decay: decay of the target network's moving average.
        :param logit_alpha_range: :math:`r`.
        :param seed: see above.
        :param progress_bar: show a progress bar.
        :param callback: ``callback(step, self)`` every ``callback_every`` steps and at the end.
        :param callback_every: see ``callback``.
        :param time_limit: stop after this many seconds.
        :param lr_final_factor: cosine decay of the learning rate to this fraction (1.0 keeps it constant).
        :param nonterminal_reduction: ``"sum"`` sums :math:`L_N` over each trajectory's states and averages over
            trajectories (docs/math.md §1.2); ``"mean"`` averages over all visited states.
        :returns: ``self``.
        :raises FloatingPointError: when the loss becomes non-finite (the message names the step).
        """
        bases = self._resolve_bases(bases)
        check_positive_int("batch_size", batch_size)
        check_number("logit_alpha_range", logit_alpha_range, 0, strict=False)
        check_positive_int("ramp", ramp, 0)
        if nonterminal_reduction not in ("sum", "mean"):
            raise ValueError(f"nonterminal_reduction must be 'sum' or 'mean', got {nonterminal_reduction!r}")
        self.bases = bases
        env = self.env
        tables = [b.log_prob_table() if env.is_enumerable else None for b in bases]
        all_states = env.all_states(self.device) if env.is_enumerable and not self.alpha_conditioned else None

        def loss(state: TrainState):
            value, loss_t, loss_n = self.training_loss(
                bases, state.ema, state.step, state.batch_size, ramp, logit_alpha_range, nonterminal_reduction, tables,
                all_states,
            )  # fmt: skip
            return value, {"loss_terminal": loss_t, "loss_nonterminal": loss_n}

        return fit_loop(
            self,
            loss,
            param_groups=[{"params": list(self.parameters()), "lr": lr, "name": "lr"}],
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
            "env": self.env.config(),
            "num_models": self.num_models,
            "num_observations": self.num_observations,
            "alpha_conditioned": self.alpha_conditioned,
            "hidden": self.hidden,
            "layers": self.layers,
            "custom_network": self.custom_network,
            "state_dict": cpu_state_dict(self),
            "history": self.history,
        }

    @classmethod
    def _from_checkpoint(
        cls,
        path: Union[str, Path],
        data: dict,
        env: Optional[DiscreteEnv] = None,
        device=None,
        *,
        network: Optional[nn.Module] = None,
        **extra: Any,
    ) -> "ObservationClassifier":
        """``ObservationClassifier.load(path, env=None, device=None, *, network=None)``: load a checkpoint written
        by :meth:`save` (``extra``: a subclass's own arguments, :meth:`_constructor_options`).

        :param env: the environment; must match the checkpoint's (rebuilt from the checkpoint when omitted).
        :param device: where to put the loaded classifier.
        :param network: an (untrained) network of the saved architecture, required when the classifier was saved
            with a custom network.
        :raises ValueError: for a file that is not such a checkpoint, another format version, a checkpoint trained
            on another environment, or a network that does not match.
        """
        check_env(path, data["env"], env)
        if data.get("custom_network", False) and network is None:
            raise ValueError(f"checkpoint {path} was saved with a custom network: pass network=...")
        clf = cls(
            env or env_from_config(data["env"]),
            data["num_models"],
            data["num_observations"],
            hidden=data["hidden"],
            layers=data["layers"],
            network=network,
            **cls._constructor_options(path, data, **extra),
        )
        try:
            clf.load_state_dict(data["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match the network: {err}") from None
        clf.history = list(data.get("history", []))
        return clf.to(device) if device is not None else clf

    @classmethod
    def _constructor_options(cls, path: Union[str, Path], data: dict) -> dict:
        """The constructor's keyword arguments of a checkpoint beyond the shared ones (a subclass adds its own)."""
        return {"alpha_conditioned": data["alpha_conditioned"]}

    def cache_key(self):
        return parameters_key(self)


def _pad(batches, stop: int):
    """Pad trajectory batches of different lengths to the longest (repeat the last state, stop, inactive)."""
    length = max(a.shape[1] for _, a, _ in batches)
    out = []
    for states, actions, active in batches:
        extra = length - actions.shape[1]
        if extra:
            states = torch.cat([states, states[:, -1:].expand(-1, extra, -1)], 1)
            actions = torch.cat([actions, torch.full_like(actions[:, :1], stop).expand(-1, extra)], 1)
            active = torch.cat([active, torch.zeros_like(active[:, :1]).expand(-1, extra)], 1)
        out.append((states, actions, active))
    return out


def _visited(actions: torch.Tensor, active: torch.Tensor, stop: int) -> torch.Tensor:
    """``(B, T + 1)`` mask of the states a trajectory visits (s_0 and every state reached by a non-stop action)."""
    moved = active & (actions != stop)
    return torch.cat([torch.ones_like(moved[:, :1]), moved], 1)
