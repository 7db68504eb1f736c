import pytest
import torch

from pyro_sculpt.metrics import empirical_distribution, expected_l1_floor, js_divergence, l1_distance


def test_l1_and_js():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.0, 0.5, 0.5])
    assert l1_distance(p, q) == pytest.approx(1.0)
    assert l1_distance(p, p) == 0.0
    assert js_divergence(p, q) == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item())
    with pytest.raises(ValueError, match="q must sum to 1"):
        l1_distance(p, torch.tensor([0.5, 0.6, 0.0]))
    with pytest.raises(ValueError, match="same shape"):
        l1_distance(p, torch.tensor([0.5, 0.5]))


def test_expected_l1_floor_matches_simulation():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(40) * 2, 0).double()
    n = 2000
    sims = [l1_distance(empirical_distribution(torch.multinomial(p, n, replacement=True), 40), p) for _ in range(400)]
    assert sum(sims) / len(sims) == pytest.approx(expected_l1_floor(p, n), rel=0.03)
