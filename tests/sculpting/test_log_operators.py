"""The operators on log-densities: values, degrees, gradients, nesting and linearity."""

import pytest
import torch

from pyro_sculpt.sculpting.log_operators import Base, Mixture, Negation, Product, Sculpt, Tempered

L = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.2, -1.5]], dtype=torch.float64)


def test_values_against_closed_forms():
    p = L.exp()
    b = [Base(i, 3) for i in range(3)]
    assert torch.allclose(Product(b[0], b[1])(L), L[:, 0] + L[:, 1])
    assert torch.allclose(Mixture([b[0], b[2]], [0.25, 0.75])(L), (0.25 * p[:, 0] + 0.75 * p[:, 2]).log())
    assert torch.allclose(Negation(b[0], b[1], 0.5)(L), 1.5 * L[:, 0] - 0.5 * L[:, 1])
    assert torch.allclose(Tempered(b[2], 2.0)(L), 2 * L[:, 2])
    hm = Sculpt(b[:2], (0, 1))  # (p1 + p2)/2 * p1/(p1 + p2) * p2/(p1 + p2) = p1 p2 / (2 (p1 + p2))
    assert torch.allclose(hm(L), (p[:, 0] * p[:, 1] / (2 * (p[:, 0] + p[:, 1]))).log())
    c = Sculpt(b, (2, 2, 2))  # sum of the three / 3 times (p3 / sum)^3
    s = p.sum(-1)
    assert torch.allclose(c(L), (s / 3 * (p[:, 2] / s) ** 3).log())
    alpha = Sculpt(b[:2], (0, 1), alpha=0.3)  # p(y2 = 1 | x) = 0.7 p2 / (0.3 p1 + 0.7 p2)
    expected = (p[:, 0] + p[:, 1]) / 2 * p[:, 0] / (p[:, 0] + p[:, 1]) * 0.7 * p[:, 1] / (0.3 * p[:, 0] + 0.7 * p[:, 1])
    assert torch.allclose(alpha(L), expected.log())


def test_degrees_gradients_and_linearity():
    b = [Base(i, 3) for i in range(3)]
    ops = [Product(b[0], b[1]), Negation(b[0], b[2], 2.0), Sculpt(b, (0, 1, 2)), Mixture(b), Tempered(b[1], 0.5)]
    for op in ops:
        c = 0.7
        assert torch.allclose(op(L + c), op(L) + op.degree * c)  # homogeneity
        g = op.gradient(L)
        eps = 1e-6
        for i in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[i] = eps
            assert torch.allclose(g[:, i], (op(L + e) - op(L - e)) / (2 * eps), atol=1e-6)
    assert [op.linear for op in ops] == [True, True, False, False, True]


def test_nesting_reindexes_and_substitutes():
    inner = Sculpt([Base(0, 2), Base(1, 2)], (0, 1))
    outer = Product(Base(0, 2), Base(1, 2)).substitute([inner.reindex([0, 1], 3), Base(2, 3)])
    assert outer.num_bases == 3
    assert torch.allclose(outer(L), inner(L[:, :2]) + L[:, 2])
    with pytest.raises(ValueError, match="operands read different numbers of bases"):
        Product(Base(0, 2), Base(0, 3))
    with pytest.raises(ValueError, match="a must be >= 0"):
        Negation(Base(0, 2), Base(1, 2), -1.0)
    with pytest.raises(ValueError, match="index must be a base index"):
        Base(2, 2)
