"""A forward policy over fragment trees: a message-passing encoder of the tree and a head per action kind."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pyro_sculpt.gflownets.envs.fragments.trees import ROW, sites_from_rows
from pyro_sculpt.nn.graph_encoder import GraphEncoder
from pyro_sculpt.utils import check_positive_int


class FragmentTreePolicy(nn.Module):
    """Logits of every action of a :class:`~pyro_sculpt.gflownets.envs.fragments.FragmentEnv` from its states.

    The tree is a graph of fragments (node tokens) whose bonds are typed at each end by the (fragment, site) pair
    they use; a :class:`~pyro_sculpt.nn.GraphEncoder` embeds the nodes and the tree. The heads follow the action
    layout of the environment: the first fragment and the stop from the tree's embedding; the addition of the
    ``t``-th (fragment, site) pair at site ``k`` of node ``i`` as a linear read-out (one output per pair) of
    the embedding of node ``i`` plus an embedding of its site ``(f_i, k)``. All ``n_actions`` logits of a batch come
    from one forward pass; the environment's mask is applied by the caller.

    With ``conditional=True`` the policy also takes the reward exponent :math:`\\beta` (one per state, or one for
    the batch): an MLP of :math:`(\\log \\beta, \\beta / 100)` is the context added to every node and to the tree
    embedding, so one network serves every :math:`\\beta` (docs/molecules.md, "Policy").

    It reads the states themselves (``reads_states = True``), not ``env.encode(states)``.

    :param env: the environment (its vocabulary and ``max_fragments`` fix the layout).
    :param hidden: embedding size.
    :param layers: message-passing rounds.
    :param conditional: whether :meth:`forward` takes :math:`\\beta`.
    :param outputs: values per action: ``1`` gives ``(..., n_actions)`` logits; more gives ``(..., n_actions,
        outputs)``, e.g. the per-action head of a classifier that scores every child of a state in one forward
        (:class:`~pyro_sculpt.sculpting.gflownet.ChildObservationClassifier`).

    Example::

        env = FragmentEnv(max_fragments=4)
        policy = FragmentTreePolicy(env, hidden=32, conditional=True)
        logits = policy(env.initial_state().unsqueeze(0), beta=torch.tensor([16.0]))  # (1, env.n_actions)
    """

    reads_states = True

    def __init__(self, env, hidden: int = 64, layers: int = 3, conditional: bool = False, outputs: int = 1):
        super().__init__()
        check_positive_int("hidden", hidden)
        self.outputs = check_positive_int("outputs", outputs)
        check_positive_int("layers", layers, 0)
        self.env_config = env.config()
        self.max_fragments, self.num_sites = env.max_fragments, env.num_sites
        self.num_fragments, self.num_pairs = env.num_fragments, env.num_pairs
        self.n_actions = env.n_actions
        self.hidden, self.layers, self.conditional = hidden, layers, bool(conditional)
        self.register_buffer("pair_index", env._cpu["pair_index"].clone(), persistent=False)
        self.encoder = GraphEncoder(env.num_fragments, env.num_pairs, hidden, layers)
        self.site_embedding = nn.Embedding(env.num_pairs + 1, hidden)
        self.add_head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, env.num_pairs * outputs)
        )
        self.first_head = nn.Linear(hidden, env.num_fragments * outputs)
        self.stop_head = nn.Linear(hidden, outputs)
        self.beta_embedding = (
            nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden)) if conditional else None
        )

    def config(self) -> dict:
        config = {"hidden": self.hidden, "layers": self.layers, "conditional": self.conditional}
        if self.outputs != 1:
            config["outputs"] = self.outputs
        return config

    def _tokens(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = flat.reshape(-1, self.max_fragments, ROW)
        frag, sites = sites_from_rows(rows)
        f0 = (frag - 1).clamp(min=0)
        # the (fragment, site) pair at u's end of the bond u -> v, plus one (0: no bond)
        edge_pair = self.pair_index[f0.unsqueeze(-1).expand_as(sites), sites.clamp(min=0)]
        edges = torch.where((sites >= 0) & (frag > 0).unsqueeze(-1), edge_pair + 1, 0)
        # the pair of every site of every node, plus one (0: the fragment has no such site or the node is absent)
        node_sites = self.pair_index[f0]  # (B, N, S)
        node_sites = torch.where((node_sites >= 0) & (frag > 0).unsqueeze(-1), node_sites + 1, 0)
        return frag, edges, node_sites

    def forward(self, states: torch.Tensor, beta: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(..., n_actions)`` logits at ``states`` ``(..., state_dim)`` (``(..., n_actions, outputs)`` when
        ``outputs > 1``).

        :param beta: the reward exponent, a number or a tensor broadcastable to ``states.shape[:-1]`` (required
            when the policy is conditional, refused otherwise).
        :raises ValueError: for a missing, unexpected or non-positive ``beta``.
        """
        shape = states.shape[:-1]
        flat = states.reshape(-1, states.shape[-1])
        frag, edges, node_sites = self._tokens(flat)
        context = None
        if self.conditional:
            if beta is None:
                raise ValueError("this policy is conditioned on beta: pass beta=... (the reward exponent, > 0)")
            beta = torch.as_tensor(beta, dtype=self.first_head.weight.dtype, device=flat.device)
            if (beta <= 0).any() or not torch.isfinite(beta).all():
                raise ValueError("beta must be finite and > 0")
            beta = beta.expand(shape).reshape(-1)
            context = self.beta_embedding(beta_features(beta))
        elif beta is not None:
            raise ValueError("this policy is not conditioned on beta (build it with conditional=True)")
        h, graph = self.encoder(frag, edges, context)
        b, n = frag.shape
        k = self.outputs
        first = self.first_head(graph).reshape(b, -1, k)
        stop = self.stop_head(graph).reshape(b, 1, k)
        z = h[:, : n - 1].unsqueeze(2) + self.site_embedding(node_sites[:, : n - 1])  # (B, N-1, S, H)
        add = self.add_head(z).reshape(b, -1, k)
        out = torch.cat([first, add, stop], 1)
        return out.reshape(shape + ((self.n_actions,) if k == 1 else (self.n_actions, k)))


def beta_features(beta: torch.Tensor) -> torch.Tensor:
    """``(..., 2)``: :math:`(\\log \\beta, \\beta / 100)`, the input of the beta embeddings."""
    return torch.stack([beta.log(), beta / 100.0], -1)
