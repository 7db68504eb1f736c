"""The dense message-passing encoder: equivariance under relabelling the nodes, padding, context and bad shapes."""

import pytest
import torch

import pyro_sculpt as ps


def _random_tree(n, present, gen):
    nodes = torch.zeros(n, dtype=torch.long)
    nodes[:present] = torch.randint(1, 6, (present,), generator=gen)
    edges = torch.zeros(n, n, dtype=torch.long)
    for v in range(1, present):
        u = int(torch.randint(0, v, (1,), generator=gen))
        edges[u, v] = int(torch.randint(1, 4, (1,), generator=gen))
        edges[v, u] = int(torch.randint(1, 4, (1,), generator=gen))
    return nodes, edges


def test_node_embeddings_follow_a_relabelling_and_the_graph_embedding_does_not_change():
    torch.manual_seed(0)
    enc = ps.nn.GraphEncoder(num_node_tokens=5, num_edge_tokens=3, hidden=16, layers=3).double()
    gen = torch.Generator().manual_seed(1)
    nodes, edges = _random_tree(7, 5, gen)
    perm = torch.randperm(7, generator=gen)
    ctx = torch.randn(1, 16, dtype=torch.float64)
    h, g = enc(nodes[None], edges[None], ctx)
    h2, g2 = enc(nodes[perm][None], edges[perm][:, perm][None], ctx)
    assert torch.allclose(h2[0], h[0][perm], atol=1e-12)
    assert torch.allclose(g2, g, atol=1e-12)
    assert (h[0][nodes == 0] == 0).all()  # absent nodes stay zero
    # the edge types matter, and so does the context
    edges3 = edges.clone()
    edges3[edges3 > 0] = edges3[edges3 > 0] % 3 + 1
    assert not torch.allclose(enc(nodes[None], edges3[None], ctx)[1], g)
    assert not torch.allclose(enc(nodes[None], edges[None], ctx + 1)[1], g)


def test_bad_shapes_are_named():
    enc = ps.nn.GraphEncoder(5, 3, hidden=8, layers=1)
    with pytest.raises(ValueError, match="edges"):
        enc(torch.ones(2, 4, dtype=torch.long), torch.zeros(2, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="context"):
        enc(torch.ones(2, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 7))
