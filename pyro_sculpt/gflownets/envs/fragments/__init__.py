"""Fragment-based molecules (Bengio et al. 2021): trees of fragments joined at attachment sites, RDKit rewards.

RDKit is optional (the ``mol`` extra): this package imports without it and asks for it when a vocabulary is built.
"""

from pyro_sculpt.gflownets.envs.fragments import rewards
from pyro_sculpt.gflownets.envs.fragments.env import FragmentEnv
from pyro_sculpt.gflownets.envs.fragments.policy import FragmentTreePolicy
from pyro_sculpt.gflownets.envs.fragments.vocabulary import (
    DEFAULT_VOCABULARY_TEXT,
    Fragment,
    Vocabulary,
    default_vocabulary,
    load_vocabulary,
)

__all__ = [
    "DEFAULT_VOCABULARY_TEXT",
    "Fragment",
    "FragmentEnv",
    "FragmentTreePolicy",
    "Vocabulary",
    "default_vocabulary",
    "load_vocabulary",
    "rewards",
]
