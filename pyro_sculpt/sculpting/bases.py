"""The one check that every family's bases meet: at least two, and a property they all share."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence


def check_shared(
    bases: Sequence[Any],
    name: str,
    what: str,
    key: Callable[[Any], Any],
    must: str,
    show: Optional[Callable[[Any], Any]] = None,
) -> None:
    """Raise a :class:`ValueError` unless ``bases`` are at least two and ``key`` is equal for all of them.

    :param bases: the bases (already checked to be of the family).
    :param name: the argument's name in messages (``"bases"``).
    :param what: what ``key`` reads, for messages (``"data dimension"``).
    :param key: the shared property of a base.
    :param must: why it must be shared (``"every base must live in one space"``).
    :param show: what the message shows of a base (default ``key``).
    """
    if len(bases) < 2:
        raise ValueError(f"{name} must hold at least two base models, got {len(bases)}")
    first = key(bases[0])
    for k, b in enumerate(bases[1:], 1):
        value = key(b)
        if value != first:
            a, b0 = (show(b), show(bases[0])) if show is not None else (value, first)
            raise ValueError(f"{name}[{k}] has {what} {a!r}, but {name}[0] has {b0!r}: {must}")
