"""A message-passing encoder of small graphs given as dense padded tensors (plain torch, no graph library)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pyro_sculpt.utils import check_positive_int


class GraphEncoder(nn.Module):
    """Node and graph embeddings of a batch of small graphs by message passing (Gilmer et al. 2017), dense and padded.

    A graph of at most ``N`` nodes is given by integer tokens: ``nodes (B, N)`` (0: absent node, else a node type
    in ``1..num_node_tokens``) and ``edges (B, N, N)`` (0: no edge from ``u`` to ``v``, else an edge type in
    ``1..num_edge_tokens``; the type may differ in the two directions, e.g. the attachment site at each end of a
    bond). Each of the ``layers`` rounds updates every present node with the sum of the messages of its neighbours,

    .. math::

        h_u \\leftarrow \\mathrm{LN}\\Big(h_u + \\mathrm{MLP}\\big(h_u, W \\textstyle\\sum_{v: e_{uv} > 0}
        \\phi(h_v + E_{\\mathrm{out}}[e_{vu}] + E_{\\mathrm{in}}[e_{uv}])\\big) + c\\Big),

    with :math:`\\phi` a leaky ReLU, :math:`W` linear (applied after the sum), and an optional context vector
    :math:`c` (for instance an embedding of a reward exponent) added to every node.
    The graph embedding is an MLP of the mean and the sum of the present nodes' embeddings and the context. Every
    operation is batched over the graphs: messages over the list of all edges of the batch, nodes as ``(B, N,
    hidden)``.

    :param num_node_tokens: number of node types.
    :param num_edge_tokens: number of edge types.
    :param hidden: embedding size.
    :param layers: message-passing rounds (>= 0).

    Example::

        enc = ps.nn.GraphEncoder(num_node_tokens=5, num_edge_tokens=3, hidden=32, layers=2)
        nodes = torch.tensor([[1, 2, 0]])  # two nodes, one absent
        edges = torch.tensor([[[0, 1, 0], [2, 0, 0], [0, 0, 0]]])  # one bond, typed at both ends
        h, g = enc(nodes, edges)  # (1, 3, 32) node embeddings, (1, 32) graph embedding
    """

    def __init__(self, num_node_tokens: int, num_edge_tokens: int, hidden: int = 64, layers: int = 3):
        super().__init__()
        check_positive_int("num_node_tokens", num_node_tokens)
        check_positive_int("num_edge_tokens", num_edge_tokens)
        check_positive_int("hidden", hidden)
        check_positive_int("layers", layers, 0)
        self.num_node_tokens, self.num_edge_tokens, self.hidden, self.layers = (
            num_node_tokens,
            num_edge_tokens,
            hidden,
            layers,
        )
        self.node_embedding = nn.Embedding(num_node_tokens + 1, hidden)
        self.edge_out = nn.ModuleList(nn.Embedding(num_edge_tokens + 1, hidden) for _ in range(layers))
        self.edge_in = nn.ModuleList(nn.Embedding(num_edge_tokens + 1, hidden) for _ in range(layers))
        self.message = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.update = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden))
            for _ in range(layers)
        )
        self.norm = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.readout = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden))

    def forward(
        self, nodes: torch.Tensor, edges: torch.Tensor, context: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:returns: ``(h (B, N, hidden), graph (B, hidden))``; absent nodes' rows of ``h`` are zero.

        :param nodes: ``(B, N)`` node tokens.
        :param edges: ``(B, N, N)`` edge tokens.
        :param context: ``(B, hidden)`` or ``None``.
        :raises ValueError: for inconsistent shapes.
        """
        if nodes.dim() != 2 or edges.shape != nodes.shape + nodes.shape[-1:]:
            raise ValueError(
                f"nodes must be (B, N) and edges (B, N, N), got {tuple(nodes.shape)} and {tuple(edges.shape)}"
            )
        b = nodes.shape[0]
        if context is not None and context.shape != (b, self.hidden):
            raise ValueError(f"context must have shape ({b}, {self.hidden}), got {tuple(context.shape)}")
        present = (nodes > 0).unsqueeze(-1).to(self.node_embedding.weight.dtype)
        ctx = context.unsqueeze(1) if context is not None else 0.0
        h = self.node_embedding(nodes) * present
        # the edges as a list (sparse graphs: O(edges * hidden) per round instead of O(N^2 * hidden))
        bi, ui, vi = (edges > 0).nonzero(as_tuple=True)
        tok_uv, tok_vu = edges[bi, ui, vi], edges[bi, vi, ui]  # the type at u's end, at v's end
        for k in range(self.layers):
            x = h[bi, vi] + self.edge_out[k](tok_vu) + self.edge_in[k](tok_uv)  # message v -> u
            total = torch.zeros_like(h).index_put_((bi, ui), torch.nn.functional.leaky_relu(x), accumulate=True)
            m = self.message[k](total)  # linear after the sum
            h = self.norm[k](h + self.update[k](torch.cat([h, m], -1)) + ctx) * present
        count = present.sum(1)
        total = h.sum(1)
        mean = total / count.clamp(min=1)
        c = context if context is not None else torch.zeros_like(total)
        graph = self.readout(torch.cat([mean, total / nodes.shape[1], c], -1))
        return h, graph
