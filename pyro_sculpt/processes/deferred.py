"""Step distributions computed only when used.

A mixture process emits its own step distribution at every site, and the guidance handler replaces it by the guided
one: computing the replaced one is wasted work on the hot path. A deferred distribution knows its batch shape (all a
handler reads before replacing it) and computes its parameters on first use (sampling, scoring, expanding).
"""

from __future__ import annotations

from typing import Callable

import torch
from pyro.distributions import Categorical
from torch.distributions import Distribution

from pyro_sculpt.processes.categorical import FAST_MIN_CATEGORIES, sample_inverse_cdf


class DeferredCategorical(Categorical):
    """A :class:`~pyro.distributions.Categorical` whose logits come from ``compute()`` on first use.

    :param batch_shape: the batch shape of the logits ``compute`` returns (without the category dimension).
    :param num_categories: the number of categories.
    :param compute: returns the (unnormalised) logits, shape ``batch_shape + (num_categories,)``.

    Example::

        d = DeferredCategorical(torch.Size([10]), 3, lambda: expensive_logits())   # nothing computed yet
        d.sample()                                                                  # computed here, once
    """

    def __init__(self, batch_shape: torch.Size, num_categories: int, compute: Callable[[], torch.Tensor]):
        self._compute = compute
        self._num_events = int(num_categories)
        Distribution.__init__(self, torch.Size(batch_shape), validate_args=False)

    @property
    def logits(self) -> torch.Tensor:  # type: ignore[override]
        cached = self.__dict__.get("_logits")
        if cached is None:
            logits = self._compute()
            expected = tuple(self.batch_shape) + (self._num_events,)
            if tuple(logits.shape) != expected:
                raise ValueError(f"compute() must return logits of shape {expected}, got {tuple(logits.shape)}")
            cached = logits - logits.logsumexp(-1, keepdim=True)
            self.__dict__["_logits"] = cached
        return cached

    @property
    def probs(self) -> torch.Tensor:  # type: ignore[override]
        return self.logits.exp()

    @property
    def _param(self) -> torch.Tensor:  # type: ignore[override]
        return self.logits

    def sample(self, sample_shape=torch.Size()):
        """Drawn by inverting the cumulative distribution (:func:`~pyro_sculpt.processes.sample_inverse_cdf`) over
        many categories."""
        if self._num_events < FAST_MIN_CATEGORIES:
            return super().sample(sample_shape)
        with torch.no_grad():
            return sample_inverse_cdf(self.probs, torch.Size(sample_shape))

    @property
    def computed(self) -> bool:
        """Whether the logits have been computed."""
        return "_logits" in self.__dict__

    def expand(self, batch_shape, _instance=None):
        """Expanding stays deferred (Pyro's plates expand every site's distribution, even to its own shape)."""
        batch_shape = torch.Size(batch_shape)
        if _instance is not None:
            return Categorical(logits=self.logits).expand(batch_shape, _instance)
        if batch_shape == self.batch_shape:
            return self
        shape = batch_shape + (self._num_events,)
        return DeferredCategorical(batch_shape, self._num_events, lambda: self.logits.expand(shape))
