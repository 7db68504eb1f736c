"""Layer 5: distances between distributions (exact on enumerable spaces, sample-based on continuous ones)."""

from pyro_sculpt.metrics.discrete import empirical_distribution, expected_l1_floor, js_divergence, l1_distance

__all__ = ["empirical_distribution", "expected_l1_floor", "js_divergence", "l1_distance"]
