"""The observation "which base model produced x" as a Pyro distribution."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from pyro.distributions import Categorical

from pyro_sculpt.sculpting.observations import Observations, PriorLike, check_weights
from pyro_sculpt.utils import check_finite


class ModelOfOrigin(Categorical):
    """:math:`\\tilde p(y = i \\mid x) = \\pi_i p_i(x) / \\sum_j \\pi_j p_j(x)` from a classifier's terminal head.

    With it, a composition is an ordinary Pyro model: draw :math:`x` from the mixture and observe the model of
    origin; Pyro's inference (``Importance``, ``SMCFilter``, ...) then targets the sculpted distribution.

    :param classifier: an observation classifier of the bases.
    :param x: terminal values ``(...,) + event_shape`` (checked by the classifier).
    :param prior: the prior :math:`\\pi` over bases (default uniform): the mixture weights for :math:`y_1`. Numbers
        or tensors (e.g. ``(w, 1 - w)`` or a ``simplex``-constrained :func:`pyro.param`), each finite and > 0.
    :param alpha: shorthand for ``prior=(alpha, 1 - alpha)`` (two bases), in (0, 1); a number or a 0-d tensor.

    :meth:`log_prob` is differentiable in a tensor ``prior`` or ``alpha`` (not in ``x``: the classifier's logits
    are what they are), so that SVI learns them.

    Example::

        def model():
            x = pyro.sample("x", ps.mixture(p1, p2))
            pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
            pyro.sample("y2", ps.ModelOfOrigin(clf, x), obs=torch.tensor(1))

        def learn_alpha(x, y2):  # x: terminal states, y2: observed labels
            a = pyro.param("a", torch.tensor(0.5), constraint=constraints.unit_interval)
            with pyro.plate("data", len(x)):
                pyro.sample("y2", ps.ModelOfOrigin(clf, x, alpha=a), obs=y2)
    """

    def __init__(
        self,
        classifier: Any,
        x: torch.Tensor,
        prior: Optional[PriorLike] = None,
        alpha: Optional[Union[float, torch.Tensor]] = None,
        validate_args=None,
    ):
        if not callable(getattr(classifier, "terminal_logits", None)) or not hasattr(classifier, "num_models"):
            raise TypeError(
                "classifier must be an observation classifier (with terminal_logits and num_models), got "
                f"{type(classifier).__name__}"
            )
        if prior is not None and alpha is not None:
            raise ValueError("give prior or alpha, not both")
        m = classifier.num_models
        if alpha is not None:
            obs = Observations.build((None, None), m, alpha=alpha)
            log_prior = obs.log_priors()[1]
        else:
            log_prior = check_weights(prior, m, "prior").log()
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            check_finite("x", x)
        logits = classifier.terminal_logits(x)
        if bool(torch.isnan(logits).any()):
            raise ValueError(
                f"classifier {type(classifier).__name__} gave NaN logits for {int(torch.isnan(logits).any(-1).sum())} "
                "of the values x (its densities or network at those points)"
            )
        super().__init__(logits=logits + log_prior.to(logits), validate_args=validate_args)
        self.classifier, self.prior, self.alpha = classifier, prior, alpha

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ModelOfOrigin, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.classifier, new.prior, new.alpha = self.classifier, self.prior, self.alpha
        return new
