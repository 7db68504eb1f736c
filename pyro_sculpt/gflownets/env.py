"""The environment protocol of discrete GFlowNets."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch.distributions import constraints

from pyro_sculpt.gflownets.registry import registered_env_name


class DiscreteEnv(ABC):
    """A directed acyclic graph of discrete states in which a GFlowNet builds objects.

    States are integer tensors of shape ``(..., state_dim)`` with any batch dimensions. Actions are integers in
    ``[0, n_actions)``; the last action, :attr:`stop_action`, ends the trajectory at the current state. Every
    non-stop action moves to a child state one level further from the initial state, so trajectories have at most
    :attr:`max_steps` steps (the stop included).

    The backward policy is uniform over parents, :math:`P_B(s \\mid s') = 1 / |\\mathrm{Pa}(s')|`; composition
    requires every base GFlowNet to share it (Garipov et al. 2023, §4).

    Example::

        env = ps.HyperGrid(ndim=2, height=8)  # a DiscreteEnv
        states = env.all_states()  # (64, 2): enumerable
        mask = env.forward_mask(states)  # (64, env.n_actions) allowed actions
    """

    #: number of actions, the stop action included (it is the last one)
    n_actions: int
    #: length of the state vector
    state_dim: int
    #: upper bound on a trajectory's length, the stop action included
    max_steps: int
    #: length of :meth:`encode`'s feature vector
    feature_dim: int

    @property
    def support(self) -> constraints.Constraint:
        """The constraint satisfied by every state (default: non-negative integer vectors)."""
        return constraints.independent(constraints.nonnegative_integer, 1)

    @property
    def stop_action(self) -> int:
        return self.n_actions - 1

    @abstractmethod
    def initial_state(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The initial state :math:`s_0`, shape ``(state_dim,)``."""

    @abstractmethod
    def forward_mask(self, states: torch.Tensor) -> torch.Tensor:
        """Boolean mask ``(..., n_actions)`` of the valid actions of each state. Stop is valid wherever the state
        may be terminal (everywhere on the hypergrid; not at the empty molecule)."""

    @abstractmethod
    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The states reached by ``actions``; the stop action (and any invalid action) leaves the state unchanged.

        ``states`` ``(..., state_dim)`` and ``actions`` ``(...)`` have one batch shape: the library's processes call
        :meth:`step_batch`, which broadcasts them first, so an environment need not broadcast itself.
        """

    def step_batch(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """:meth:`step` after broadcasting ``states`` ``(..., state_dim)`` against ``actions`` ``(...)`` (the first
        step of :func:`pyro_sculpt.run` has one unbatched state and a batch of actions).

        Example::

            env.step_batch(env.initial_state(), torch.tensor([0, 1, 2]))  # (3, state_dim)
        """
        if states.shape[:-1] == actions.shape:
            return self.step(states, actions)
        batch = torch.broadcast_shapes(states.shape[:-1], actions.shape)
        return self.step(states.expand(batch + states.shape[-1:]).contiguous(), actions.expand(batch).contiguous())

    def children(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All children of all states in one batch.

        :returns: ``(children, mask)`` of shapes ``(..., n_actions, state_dim)`` and ``(..., n_actions)``. The
            child of an invalid action is a placeholder (the state itself) and the child of the stop action is the
            state itself, which is then terminal.
        """
        actions = torch.arange(self.n_actions, device=states.device)
        expanded = states.unsqueeze(-2).expand(states.shape[:-1] + (self.n_actions, self.state_dim))
        kids = self.step(expanded, actions.expand(states.shape[:-1] + (self.n_actions,)))
        return kids, self.forward_mask(states)

    def valid_children(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The children reached by the VALID non-stop actions of a flat batch of states, as a sparse list.

        Guidance evaluates a classifier on every child of every particle; environments with many actions of which
        few are valid at a time (fragment molecules) override this to build only the valid children. The default
        derives it from :meth:`children`.

        :param states: ``(B, state_dim)``.
        :returns: ``(parent, action, children)`` of shapes ``(K,)``, ``(K,)``, ``(K, state_dim)``: child ``k`` is
            reached from ``states[parent[k]]`` by ``action[k]``.
        """
        kids, mask = self.children(states)
        mask = mask.clone()
        mask[..., self.stop_action] = False
        parent, action = mask.nonzero(as_tuple=True)
        return parent, action, kids[parent, action]

    def children_log_backward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`\\log P_B(s \\mid s')` of the uniform backward policy for every valid child :math:`s'` of a flat
        batch of states, as a sparse list: what a composition twisted by the backward policy reads at every step
        (products, negations; docs/sculpting.md).

        The default is :meth:`log_backward` of :meth:`valid_children`; an environment whose parent count does not need
        the child in its normal form (fragment trees: no canonicalisation) overrides it with a cheaper one.

        :param states: ``(B, state_dim)``.
        :returns: ``(parent, action, log_pb)`` of shapes ``(K,)``, ``(K,)``, ``(K,)``, in the order and with the
            pairs of :meth:`valid_children`.
        """
        parent, action, kids = self.valid_children(states)
        return parent, action, self.log_backward(kids)

    @abstractmethod
    def num_parents(self, states: torch.Tensor) -> torch.Tensor:
        """Number of parents of each state, shape ``(...)``."""

    def parents(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every parent of every state of a flat batch, each with the action that leads from it to the state: what
        backward sampling needs (:func:`~pyro_sculpt.gflownets.backward.sample_backward`).

        The default reads the edges of an enumerable environment (built once per device); environments that are not
        enumerable override it.

        :param states: ``(B, state_dim)``.
        :returns: ``(index, parents, actions)`` of shapes ``(P,)``, ``(P, state_dim)``, ``(P,)``, ordered by ``index``:
            ``step(parents[k], actions[k])`` is ``states[index[k]]``. Each distinct parent appears once, so state
            ``b`` has :meth:`num_parents` of them; the initial state has none.
        """
        if not self.is_enumerable:
            raise NotImplementedError(
                f"{type(self).__name__} does not list the parents of its states: override DiscreteEnv.parents to "
                "sample trajectories backward"
            )
        cache = self.__dict__.setdefault("_parent_edges", {})
        key = str(states.device)
        if key not in cache:
            all_states = self.all_states(states.device)
            src, action, kids = self.valid_children(all_states)
            dst = self.index(kids)
            order = torch.argsort(dst, stable=True)
            start = torch.zeros(self.num_states + 1, dtype=torch.long, device=states.device)
            start[1:] = torch.cumsum(torch.bincount(dst, minlength=self.num_states), 0)
            cache[key] = (all_states[src[order]], action[order], start)
        parent_states, parent_actions, start = cache[key]
        idx = self.index(states)
        counts = start[idx + 1] - start[idx]
        index = torch.repeat_interleave(torch.arange(len(idx), device=states.device), counts)
        offset = torch.arange(len(index), device=states.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        edge = start[idx][index] + offset
        return index, parent_states[edge], parent_actions[edge]

    def log_backward(self, states: torch.Tensor) -> torch.Tensor:
        """:math:`\\log P_B(s \\mid s')` of the uniform backward policy, for the step that reached ``states``."""
        return -torch.log(self.num_parents(states).to(torch.get_default_dtype()))

    @abstractmethod
    def encode(self, states: torch.Tensor) -> torch.Tensor:
        """Float features ``(..., feature_dim)`` of states, the input of policy and classifier networks."""

    def validate_states(self, states: torch.Tensor, name: str = "states") -> None:
        """Raise a :class:`ValueError` naming ``name`` if ``states`` are not states of this environment."""
        if states.shape[-1:] != (self.state_dim,):
            raise ValueError(f"{name} must have shape (..., {self.state_dim}), got {tuple(states.shape)}")

    # ----- enumerable environments -----

    @property
    def is_enumerable(self) -> bool:
        """Whether every state can be listed (exact answers by dynamic programming). An enumerable environment
        returns ``True`` here and defines :attr:`num_states`, :meth:`all_states`, :meth:`index` and :meth:`levels`."""
        return False

    def all_states(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Every state, shape ``(num_states, state_dim)``, ordered so that parents come before children."""
        raise NotImplementedError(f"{type(self).__name__} is not enumerable")

    def levels(self, states: torch.Tensor) -> torch.Tensor:
        """Topological level (number of non-stop steps from :math:`s_0`) of each state."""
        raise NotImplementedError(f"{type(self).__name__} is not enumerable")

    def index(self, states: torch.Tensor) -> torch.Tensor:
        """Position of each state in :meth:`all_states`."""
        raise NotImplementedError(f"{type(self).__name__} is not enumerable")

    @property
    def num_states(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} is not enumerable")

    def unique(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct states of a batch and where each row of the batch is among them.

        :returns: ``(unique_states (U, state_dim), inverse (...))`` with ``unique_states[inverse] == states``.
        """
        flat = states.reshape(-1, self.state_dim)
        if self.is_enumerable:
            ids = self.index(flat)
            uniq, inverse = torch.unique(ids, return_inverse=True)
            first = torch.full((len(uniq),), len(ids), dtype=torch.long, device=ids.device)
            first.scatter_reduce_(0, inverse, torch.arange(len(ids), device=ids.device), reduce="amin")
            return flat[first], inverse.reshape(states.shape[:-1])
        uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)
        return uniq, inverse.reshape(states.shape[:-1])

    def config(self) -> dict:
        """A JSON-serialisable description, stored in checkpoints and compared on load (``"type"``: the name the
        class, or its nearest registered base, is registered under; else the class name)."""
        return {"type": registered_env_name(type(self)) or type(self).__name__}

    def same_as(self, other: DiscreteEnv) -> bool:
        return isinstance(other, DiscreteEnv) and self.config() == other.config()
