"""Processes driven by a forward policy over the actions of a :class:`DiscreteEnv`."""

from __future__ import annotations

import math
import weakref
from abc import abstractmethod
from typing import Hashable, Optional, Sequence

import torch
from pyro.distributions import Categorical
from torch.distributions import constraints

from pyro_sculpt.gflownets import exact
from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.processes.categorical import FAST_MIN_CATEGORIES, categorical, sample_inverse_cdf
from pyro_sculpt.processes.process import IterativeProcess


class DiscretePolicyProcess(IterativeProcess):
    """An iterative process whose step samples an action of ``env`` from a forward policy.

    The state is a batch of environment states; the value of a step is an action; the stop action ends the
    trajectory. Subclasses implement :meth:`action_log_probs`, the masked log-policy at any batch of states. On an
    enumerable environment the exact terminal distribution is computed by dynamic programming
    (:mod:`pyro_sculpt.gflownets.exact`) and cached until the parameters change.

    Example::

        gfn = ps.GFlowNet(ps.HyperGrid(2, 8), ps.rewards.original())  # a DiscretePolicyProcess
        p = gfn.exact_terminal_distribution()  # (64,) by dynamic programming over the policy
    """

    env: DiscreteEnv
    #: the backward policy the forward policy was trained against; sculpting needs every base to share it
    backward_policy: str = "uniform"

    @abstractmethod
    def action_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """``(..., n_actions)`` log-probabilities of the actions at ``states``, ``-inf`` on invalid actions."""

    def cache_key(self) -> Hashable:
        """Changes whenever the policy changes; used to invalidate cached exact distributions.

        The default, ``None``, means "unknown": nothing is cached. A process whose policy depends on modules returns
        :func:`parameters_key` of them; a composition returns a tuple of its parts' keys.
        """
        return None

    # ----- IterativeProcess -----

    @property
    def max_steps(self) -> int:  # type: ignore[override]
        return self.env.max_steps

    def init(self) -> torch.Tensor:
        return self.env.initial_state(self.device)

    #: evaluate networks once per distinct state of a batch (particles often share states)
    deduplicate: bool = True

    def step_dist(self, state: torch.Tensor, t: int) -> Categorical:
        return categorical(per_unique_state(self.env, self.action_log_probs, state, self.deduplicate))

    def transition(self, state: torch.Tensor, value: torch.Tensor, t: int) -> torch.Tensor:
        return self.env.step_batch(state, value)

    def stops(self, state: torch.Tensor, value: torch.Tensor, t: int) -> torch.Tensor:
        return value == self.env.stop_action

    def terminal(self, state: torch.Tensor) -> torch.Tensor:
        return state

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.env.state_dim])

    @property
    def support(self) -> constraints.Constraint:
        return self.env.support

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def sample_trajectories(self, batch_size: int, exploration: float = 0.0, log_pf_table=None):
        """Sample ``batch_size`` trajectories without gradients.

        :param exploration: probability mass :math:`\\epsilon` given to a uniform choice among valid actions.
        :returns: ``(states, actions, active)`` of shapes ``(B, T + 1, D)``, ``(B, T)``, ``(B, T)``; ``active``
            marks the steps taken before the stop.
        """
        env = self.env
        s = env.initial_state(self.device).expand(batch_size, env.state_dim)
        done = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        states, actions, active = [s], [], []
        with torch.no_grad():
            for _ in range(env.max_steps):
                if log_pf_table is not None:
                    lp = log_pf_table[env.index(s)]
                else:
                    lp = self.action_log_probs(s)
                probs = lp.exp()
                if exploration > 0:
                    mask = env.forward_mask(s).to(probs.dtype)
                    probs = (1 - exploration) * probs + exploration * mask / mask.sum(-1, keepdim=True)
                if probs.shape[-1] >= FAST_MIN_CATEGORIES:  # wide action spaces: one cumsum and a search
                    a = sample_inverse_cdf(probs)
                else:
                    a = torch.multinomial(probs, 1).squeeze(-1)
                a = torch.where(done, torch.full_like(a, env.stop_action), a)
                s = env.step(s, a)
                states.append(s)
                actions.append(a)
                active.append(~done)
                done = done | (a == env.stop_action)
                if bool(done.all()):
                    break
        return torch.stack(states, 1), torch.stack(actions, 1), torch.stack(active, 1)

    # ----- exact answers on enumerable environments -----

    def log_prob_table(self) -> torch.Tensor:
        """Log-policy at every state of ``env.all_states()``, shape ``(num_states, n_actions)``."""
        with torch.no_grad():
            return self.action_log_probs(self.env.all_states(self.device))

    def exact_terminal_distribution(self) -> torch.Tensor:
        """The exact terminal distribution over ``env.all_states()`` (float64), by dynamic programming."""
        key = self.cache_key()
        if not is_cacheable(key):
            return exact.terminal_distribution(self.env, self.log_prob_table())
        cached = self.__dict__.get("_exact_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        p = exact.terminal_distribution(self.env, self.log_prob_table())
        self.__dict__["_exact_cache"] = (key, p)
        return p

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if not self.env.is_enumerable:
            raise NotImplementedError(
                f"{type(self).__name__} has no exact log-probability of its output: {self.env!r} is not enumerable; "
                "estimate_terminal_log_prob(x, num_trajectories) gives an importance estimate from backward "
                "trajectories"
            )
        self.env.validate_states(x, "x")
        p = self.exact_terminal_distribution().to(x.device)
        return p[self.env.index(x)].log().to(torch.get_default_dtype())

    def estimate_terminal_log_prob(self, x: torch.Tensor, num_trajectories: int = 16) -> torch.Tensor:
        """An importance estimate of :math:`\\log p_T(x)` from ``num_trajectories`` trajectories sampled backward
        from each state (:func:`pyro_sculpt.gflownets.backward.estimate_terminal_log_prob`): its exponential is
        unbiased, on any environment that lists parents, enumerable or not.

        Example::

            gfn = ps.GFlowNet(FragmentEnv(max_fragments=9), reward="qed")
            x = gfn.as_distribution().sample((100,))
            gfn.estimate_terminal_log_prob(x, num_trajectories=64)  # (100,) float64
        """
        from pyro_sculpt.gflownets.backward import estimate_terminal_log_prob

        return estimate_terminal_log_prob(self, x, num_trajectories)


def unique_rows(env: DiscreteEnv, states: torch.Tensor, enabled: bool = True, min_batch: int = 64):
    """The rows to evaluate for a batch of states: ``(rows, inverse)``.

    When deduplication pays (enabled, a batch of at least ``min_batch`` states, at most 75% distinct), ``rows`` are
    the distinct states and ``rows[inverse]`` recovers the batch; otherwise ``rows`` is the batch and ``inverse`` is
    ``None``.
    """
    if not enabled or states.dim() < 2 or math.prod(states.shape[:-1]) < min_batch:
        return states, None
    uniq, inverse = env.unique(states)
    if len(uniq) > 0.75 * inverse.numel():
        return states, None
    return uniq, inverse


def gather_rows(out, inverse: Optional[torch.Tensor]):
    """Scatter per-row results back to the batch (a tensor, or a dataclass of tensors); see :func:`unique_rows`."""
    if inverse is None:
        return out
    if isinstance(out, torch.Tensor):
        return out[inverse]
    return type(out)(**{k: v[inverse] for k, v in vars(out).items()})


def per_unique_state(env: DiscreteEnv, fn, states: torch.Tensor, enabled: bool = True):
    """``fn(states)`` evaluated once per distinct state and gathered back to the batch.

    Particles often share states (on a grid, thousands of particles occupy a few dozen states per step), so the
    networks run on the distinct states only.
    """
    rows, inverse = unique_rows(env, states, enabled)
    return gather_rows(fn(rows), inverse)


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax of ``logits`` over the entries where ``mask`` is true (``-inf`` elsewhere)."""
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


class ParametersKey:
    """A cache key over the parameters and buffers of modules, valid while none of them changes.

    Two keys are equal when they hold the same tensor objects (a replaced parameter or buffer is another object),
    with the same shape, dtype and device and the same values. The values are compared with a copy taken when the key
    was made, so that every way of changing a parameter invalidates the key: an optimiser step, ``load_state_dict``,
    an in-place operation, an assignment to ``.data``, or an in-place write through ``.data`` (which torch's version
    counters do not see). Comparing costs one pass over the parameters, small next to one evaluation of the
    network on a batch of states.

    :param tensors: the tensors the cached value depends on.
    """

    __slots__ = ("_refs", "_meta", "_values")

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self._refs = tuple(weakref.ref(t) for t in tensors)
        self._meta = tuple((t.shape, t.dtype, t.device) for t in tensors)
        self._values = tuple(t.detach().clone() for t in tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParametersKey):
            return NotImplemented
        if self is other:
            return True
        if len(self._refs) != len(other._refs) or self._meta != other._meta:
            return False
        for r1, r2 in zip(self._refs, other._refs):
            t = r1()
            if t is None or t is not r2():
                return False
        return all(torch.equal(a, b) for a, b in zip(self._values, other._values))

    def __hash__(self) -> int:
        return hash(tuple(id(r()) for r in self._refs))

    def __repr__(self) -> str:
        return f"ParametersKey({len(self._refs)} tensors)"

    def __reduce__(self):
        # weak references do not pickle, and the tensors they name are not those of the unpickled (or copied)
        # modules anyway: a pickled key comes back stale, so that a cache keyed by it is recomputed
        return (StaleKey, ())


class StaleKey:
    """A cache key equal to no other key (a pickled or copied :class:`ParametersKey`)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return "StaleKey()"


def parameters_key(*modules: torch.nn.Module) -> ParametersKey:
    """A key that changes whenever a parameter or buffer of ``modules`` changes (see :class:`ParametersKey`)."""
    return ParametersKey([t for m in modules for t in list(m.parameters()) + list(m.buffers())])


def is_cacheable(key: Hashable) -> bool:
    """Whether ``key`` identifies a cached value: not ``None`` (a process that cannot tell when it changes), nor a
    tuple holding ``None`` (a composition with such a process)."""
    if key is None:
        return False
    if isinstance(key, tuple):
        return all(is_cacheable(k) for k in key)
    return True
