"""Models cached in an experiment's output directory: reused when usable, otherwise (re)trained and saved."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

logger = logging.getLogger(__name__)


class Saveable(Protocol):
    def save(self, path: Path) -> None: ...


M = TypeVar("M", bound=Saveable)


def settings_key(*parts: Any) -> str:
    """A short hash of the settings (and seed) a cached model depends on, for its file name: runs of other settings
    or another seed in one output directory train their own models instead of loading these."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


#: what a model's ``load`` raises for a file it cannot use: unreadable, another format or format version, another
#: environment (``ValueError``), a checkpoint dictionary with missing entries (``KeyError``) or weights of other
#: shapes (``RuntimeError``)
UNUSABLE = (ValueError, KeyError, RuntimeError)


def load_or_train(path: Path, load: Callable[[Path], M], train: Callable[[], M], log=print) -> tuple[M, bool]:
    """Load the model cached at ``path``, or train one and save it there (through the model's own ``save``).

    A cached file that cannot be used (corrupt or truncated, another kind of model, another checkpoint format
    version, or a model of other settings: whatever ``load`` raises among :data:`UNUSABLE`) is not an error: it is
    named in a logged warning, with the reason, and replaced by a newly trained model, so that an interrupted or
    outdated run does not make every rerun fail.

    :param path: the cache file.
    :param load: reads a model from ``path``; raises one of :data:`UNUSABLE` for a file it cannot use.
    :param train: trains a model (called only when no usable cache exists).
    :param log: receives the progress line ``loaded {path}``.
    :returns: the model, and ``True`` if it was trained here (``False``: loaded from the cache).
    """
    path = Path(path)
    if path.exists():
        try:
            model = load(path)
        except UNUSABLE as err:
            logger.warning("cached model %s cannot be used (%s); retraining it and overwriting the file", path, err)
        else:
            log(f"loaded {path}")
            return model, False
    model = train()
    model.save(path)
    return model, True
