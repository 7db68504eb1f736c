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
            if isinstance(a, dict) and isinstance(b0, dict):  # configs (a vocabulary of 72 fragments): what differs
                keys = [key for key in {**b0, **a} if a.get(key) != b0.get(key)]
                a, b0 = {key: a.get(key) for key in keys}, {key: b0.get(key) for key in keys}
            raise ValueError(f"{name}[{k}] has {what} {a!r}, but {name}[0] has {b0!r}: {must}")


def check_classifier_bases(classifier: Any, bases: Sequence[Any], key: Callable[[Any], Any], strict: bool) -> None:
    """Refuse a classifier made for other bases, or for the same bases in another order (its output :math:`i` is the
    probability of *its* base :math:`i`: a permutation silently composes the wrong models).

    A classifier that remembers the bases it was built or fitted for (``classifier.bases``, when set) is compared
    with ``bases`` by identity of ``key(base)`` (the model behind a sampler or distribution): one of its bases at
    another position is always refused. With ``strict`` (GFlowNets), a classifier that is a function of its bases
    (``defined_by_bases``, the ``ExactClassifier``) must have these very bases in this order, and a partial overlap
    (some of its bases, some others) is refused; bases that are all other objects are accepted otherwise (the same
    models loaded again). Without ``strict`` (diffusion: samplers wrap models, exact classifiers may hold copies of
    their oracles on another device, tests wrap a model to inject faults) only the permutation is refused.

    :raises ValueError: naming, for each given base, its position among the classifier's bases.
    """
    known = getattr(classifier, "bases", None)
    if not known:
        return
    known = [key(b) for b in known]
    where = [next((j for j, k in enumerate(known) if k is given), None) for given in map(key, bases)]
    if len(known) == len(where) and where == list(range(len(where))):
        return
    if len(known) == len(where) and not (strict and getattr(classifier, "defined_by_bases", False)):
        misplaced = any(w is not None and w != i for i, w in enumerate(where))
        partial = any(w is None for w in where) and any(w is not None for w in where)
        if not misplaced and not (strict and partial):
            return
    raise ValueError(
        f"classifier was made for other bases: the given bases are, by position, its bases {where} (None: not one of "
        f"its {len(known)} bases); its output i is the probability of its own base i, so pass the bases in the "
        "classifier's order, or build a classifier for these bases"
    )
