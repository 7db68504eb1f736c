"""Rewards of fragment molecules from RDKit properties in [0, 1] (docs/math.md §5, docs/molecules.md).

A reward :math:`R(x) \\in [0, 1]` is one of the properties of :mod:`pyro_sculpt.metrics.molecules` (``qed``,
``sa``, ``mw``) of the molecule of the tree :math:`x`; the GFlowNet's target is :math:`R(x)^\\beta`, so
:math:`\\log R^\\beta = \\beta \\log \\max(R, r_{\\min})` with a documented floor :math:`r_{\\min}` that keeps the
logarithm finite (a property can be exactly 0, e.g. ``mw`` above 1000 Da). The empty tree, never terminal, gets
:math:`r_{\\min}`. Values are cached by canonical SMILES, shared by every reward of the same property.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_sculpt.gflownets.registry import register_reward
from pyro_sculpt.gflownets.rewards import Reward, check_log_reward
from pyro_sculpt.metrics.molecules import PROPERTIES, check_property, molecule_property

_CACHE: dict[str, dict[str, float]] = {name: {} for name in PROPERTIES}
_CACHE_LIMIT = 1_000_000


def check_beta(beta) -> float:
    """``beta`` as a float if it is a finite number > 0, else a :class:`ValueError` naming it."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0 (the reward exponent of R(x)^beta), got {beta!r}")
    return float(beta)


def property_values(objective: str, smiles: list[str]) -> list[float]:
    """Property ``objective`` of molecules given by canonical SMILES, cached (``NaN`` for ``""``, the empty tree)."""
    cache = _CACHE[check_property(objective)]
    out = []
    for smi in smiles:
        if not smi:
            out.append(float("nan"))
            continue
        v = cache.get(smi)
        if v is None:
            v = molecule_property(objective, smi)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[smi] = v
        out.append(v)
    return out


@register_reward("molecule")
class MoleculeReward(Reward):
    """:math:`R(x)^\\beta` for a molecular property :math:`R \\in [0, 1]` of the tree :math:`x` of a
    :class:`~pyro_sculpt.gflownets.envs.fragments.FragmentEnv`.

    :param objective: ``"qed"``, ``"sa"`` (:math:`(10 - \\mathrm{SA})/9`) or ``"mw"``
        (:math:`\\mathrm{clip}((300 - \\mathrm{MolWt})/700 + 1, 0, 1)`).
    :param beta: the default exponent :math:`\\beta > 0`; :meth:`log_reward` takes another one at sampling time.
    :param min_reward: the floor :math:`r_{\\min} \\in (0, 1)` of :math:`R` inside the logarithm.
    :raises ValueError: for an unknown objective, :math:`\\beta \\le 0`, or a floor outside (0, 1).

    Example::

        env = FragmentEnv(max_fragments=5)
        reward = MoleculeReward("qed", beta=8.0)
        reward(env, states)               # 8 log QED
        reward.log_reward(env, states, beta=32.0)
    """

    def __init__(self, objective: str = "qed", beta: float = 1.0, min_reward: float = 1e-6):
        self.objective = check_property(objective)
        self.beta = check_beta(beta)
        if not isinstance(min_reward, (int, float)) or not 0.0 < min_reward < 1.0:
            raise ValueError(f"min_reward must lie in (0, 1), got {min_reward!r}")
        self.min_reward = float(min_reward)

    def params(self) -> dict:
        return {"objective": self.objective, "beta": self.beta, "min_reward": self.min_reward}

    def values(self, env, states: torch.Tensor) -> torch.Tensor:
        """:math:`R(x) \\in [0, 1]` of ``states`` (float64, shape ``states.shape[:-1]``; ``NaN`` for the empty
        tree)."""
        _check_env(env)
        vals = property_values(self.objective, env.to_smiles(states))
        return torch.tensor(vals, dtype=torch.float64, device=states.device).reshape(states.shape[:-1])

    def __call__(self, env, states: torch.Tensor, beta: Optional[float] = None) -> torch.Tensor:
        return check_log_reward(self.log_reward(env, states, beta), states, f"reward {self.name!r}")

    def log_reward(self, env, states: torch.Tensor, beta: Optional[float] = None) -> torch.Tensor:
        """:math:`\\beta \\log \\max(R(x), r_{\\min})`, with ``beta`` (default: the reward's own) > 0."""
        beta = self.beta if beta is None else check_beta(beta)
        r = self.values(env, states)
        r = torch.where(torch.isnan(r), self.min_reward, r).clamp(min=self.min_reward)
        return (beta * r.log()).to(torch.get_default_dtype())


def _check_env(env) -> None:
    from pyro_sculpt.gflownets.envs.fragments.env import FragmentEnv

    if not isinstance(env, FragmentEnv):
        raise ValueError(f"molecule rewards need a FragmentEnv, got {type(env).__name__}")


@register_reward("qed")
class QEDReward(MoleculeReward):
    """:math:`\\mathrm{QED}(x)^\\beta` (see :class:`MoleculeReward`)."""

    def __init__(self, beta: float = 1.0, min_reward: float = 1e-6):
        super().__init__("qed", beta, min_reward)

    def params(self) -> dict:
        return {"beta": self.beta, "min_reward": self.min_reward}


@register_reward("sa")
class SAReward(MoleculeReward):
    """:math:`((10 - \\mathrm{SA}(x))/9)^\\beta` (see :class:`MoleculeReward`)."""

    def __init__(self, beta: float = 1.0, min_reward: float = 1e-6):
        super().__init__("sa", beta, min_reward)

    def params(self) -> dict:
        return {"beta": self.beta, "min_reward": self.min_reward}


@register_reward("mw")
class MWReward(MoleculeReward):
    """:math:`\\mathrm{clip}((300 - \\mathrm{MolWt}(x))/700 + 1, 0, 1)^\\beta` (see :class:`MoleculeReward`)."""

    def __init__(self, beta: float = 1.0, min_reward: float = 1e-6):
        super().__init__("mw", beta, min_reward)

    def params(self) -> dict:
        return {"beta": self.beta, "min_reward": self.min_reward}


def molecule_reward(objective: str, beta: float = 1.0, min_reward: float = 1e-6) -> MoleculeReward:
    """The reward :math:`R^\\beta` of a property (see :class:`MoleculeReward`)."""
    return MoleculeReward(objective, beta, min_reward)
