"""Layer 5: distances between distributions (exact on enumerable spaces, sample-based on continuous ones) and
molecule metrics (:mod:`pyro_sculpt.metrics.molecules`, RDKit imported when used)."""

from pyro_sculpt.metrics import molecules
from pyro_sculpt.metrics.continuous import (
    assign_modes,
    energy_distance,
    grid,
    grid_mode_weights,
    grid_probabilities,
    mmd,
    mmd2,
    mode_weight_tv,
    mode_weights,
    sample_grid,
)
from pyro_sculpt.metrics.discrete import empirical_distribution, expected_l1_floor, js_divergence, l1_distance

__all__ = [
    "assign_modes",
    "empirical_distribution",
    "energy_distance",
    "expected_l1_floor",
    "grid",
    "grid_mode_weights",
    "grid_probabilities",
    "js_divergence",
    "l1_distance",
    "mmd",
    "mmd2",
    "mode_weight_tv",
    "mode_weights",
    "molecules",
    "sample_grid",
]
