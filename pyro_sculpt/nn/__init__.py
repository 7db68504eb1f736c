"""Layer 1: network modules shared by the families (MLP, time embeddings, score networks)."""

from pyro_sculpt.nn.embeddings import SinusoidalTimeEmbedding
from pyro_sculpt.nn.mlp import MLP
from pyro_sculpt.nn.score_mlp import ScoreMLP

__all__ = ["MLP", "ScoreMLP", "SinusoidalTimeEmbedding"]
