"""Layer 1: network modules shared by the families (MLP, time embeddings, score networks, the observation head,
a graph encoder)."""

from pyro_sculpt.nn.embeddings import SinusoidalTimeEmbedding
from pyro_sculpt.nn.energy_mlp import EnergyGradient, EnergyMLP
from pyro_sculpt.nn.graph_encoder import GraphEncoder
from pyro_sculpt.nn.mlp import MLP
from pyro_sculpt.nn.observation_head import check_network, observation_output_size, split_observation_output
from pyro_sculpt.nn.score_mlp import ScoreMLP
from pyro_sculpt.nn.unet import ConvClassifierNet, ResidualBlock, UNet

__all__ = [
    "ConvClassifierNet",
    "MLP",
    "EnergyGradient",
    "EnergyMLP",
    "GraphEncoder",
    "ResidualBlock",
    "ScoreMLP",
    "SinusoidalTimeEmbedding",
    "UNet",
    "check_network",
    "observation_output_size",
    "split_observation_output",
]
