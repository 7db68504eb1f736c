"""Registries of environment and reward classes: how checkpoints name them, save them and build them again.

A checkpoint stores an environment as :meth:`DiscreteEnv.config() <pyro_sculpt.gflownets.DiscreteEnv.config>`
(``{"type": name, **parameters}``) and a reward as :meth:`Reward.config() <pyro_sculpt.gflownets.Reward.config>`
(``{"name": name, **parameters}``); loading looks the name up here. A user's own classes join with a decorator, in
their own file:

.. code-block:: python

    @ps.gflownets.register_env
    class Ring(ps.gflownets.DiscreteEnv):
        ...
        def config(self):
            return {"type": "Ring", "size": self.size}

    @ps.gflownets.register_reward("ring_peak")
    class RingPeak(ps.gflownets.Reward):
        def log_reward(self, env, states): ...
"""

from __future__ import annotations

from typing import Any, Callable, Optional

_ENVS: dict[str, type] = {}
_REWARDS: dict[str, type] = {}


def register_env(cls: Optional[type] = None, *, name: Optional[str] = None) -> Any:
    """Register an environment class under ``name`` (default its class name), the ``"type"`` of its config.

    Usable as ``@register_env`` or ``@register_env(name="...")``.

    Example::

        @ps.gflownets.register_env
        class MyGrid(ps.HyperGrid):
            pass

        ps.gflownets.env_from_config(MyGrid(2, 8).config())  # a MyGrid again
    """

    def deco(c: type) -> type:
        key = name or c.__name__
        if key in _ENVS and _ENVS[key] is not c:
            raise ValueError(f"an environment is already registered as {key!r} ({_ENVS[key].__qualname__})")
        _ENVS[key] = c
        return c

    return deco(cls) if cls is not None else deco


def registered_env_name(cls: type) -> Optional[str]:
    """The name ``cls`` is registered under, or that of its nearest registered base class (``None`` if neither is):
    the ``"type"`` an environment's config writes, so that a registered subclass rebuilds as itself."""
    for c in cls.__mro__:
        for key, value in _ENVS.items():
            if value is c:
                return key
    return None


def env_from_config(config: dict) -> Any:
    """Rebuild an environment from its :meth:`~pyro_sculpt.gflownets.DiscreteEnv.config`.

    :raises ValueError: for a type that is not registered (name the class with :func:`register_env`).

    Example::

        env = ps.gflownets.env_from_config(ps.HyperGrid(2, 8).config())
    """
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict from DiscreteEnv.config(), got {type(config).__name__}")
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in _ENVS:
        raise ValueError(
            f"unknown environment type {kind!r} in config; registered: {sorted(_ENVS)} (register your own class "
            "with pyro_sculpt.gflownets.register_env)"
        )
    return _ENVS[kind](**config)


def register_reward(name: str) -> Callable[[type], type]:
    """Register a reward class under ``name`` (its :attr:`~pyro_sculpt.gflownets.Reward.name`).

    Example::

        @ps.gflownets.register_reward("to_origin")
        class ToOrigin(ps.gflownets.Reward):
            name = "to_origin"

            def log_reward(self, env, states):
                return -states.sum(-1).float()

        ps.gflownets.get_reward("to_origin")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def deco(cls: type) -> type:
        if name in _REWARDS and _REWARDS[name] is not cls:
            raise ValueError(f"a reward is already registered as {name!r} ({_REWARDS[name].__qualname__})")
        _REWARDS[name] = cls
        cls.name = name
        return cls

    return deco


def get_reward(name: str, **params) -> Any:
    """A registered reward by name, built with ``params``.

    :raises ValueError: for an unknown name.

    Example::

        reward = ps.gflownets.get_reward("symmetric_shubert", temperature=0.5)
    """
    if name not in _REWARDS:
        raise ValueError(f"unknown reward name {name!r}; expected one of {sorted(_REWARDS)}")
    return _REWARDS[name](**params)


def reward_from_config(config: dict) -> Any:
    """Rebuild a reward from its :meth:`~pyro_sculpt.gflownets.Reward.config`.

    Example::

        reward = ps.gflownets.reward_from_config(ps.rewards.diagonal_sigmoid().config())
    """
    config = dict(config)
    return get_reward(config.pop("name"), **config)


def reward_names(kind: Optional[type] = None) -> list[str]:
    """The names of the registered rewards (of the subclasses of ``kind`` only, if given).

    Example::

        "original" in ps.gflownets.reward_names()  # True
        "qed" in ps.gflownets.reward_names(ps.rewards.GridReward)  # False: a molecule reward
    """
    if kind is None:
        return sorted(_REWARDS)
    return sorted(name for name, cls in _REWARDS.items() if isinstance(cls, type) and issubclass(cls, kind))
