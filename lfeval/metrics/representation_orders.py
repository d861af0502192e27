"""The other perturbation orders of RepresentationShift: insertion and least-relevant-first (LeRF).

:class:`~lfeval.metrics.RepresentationShift` *deletes*: it replaces the most important units first (MoRF) and a
faithful attribution moves the representation fast (higher AUC is better). Its twins use the same fractions,
baseline, distance and normalised trapezoid AUC:

* :class:`RepresentationShiftInsertion` starts from the baseline and *reveals* the top-M units (every other unit
  keeps the baseline; Petsiuk et al. 2018's insertion game, COCOA's insertion curve). s(M) = d(f(x), f(x^M))
  falls to 0 as units are revealed; a faithful attribution brings the representation back fast, so **lower**
  AUC is better.
* :class:`RepresentationShiftLeRF` replaces the *least* important units first (ROAD's LeRF order, Rong et al.
  2022). A faithful attribution removes what the representation ignores first, so the shift stays small:
  **lower** AUC is better.

With ``relative=True`` the score is AUC - random AUC, so negative values beat Random for both twins.
"""

from __future__ import annotations

import quantus

from .catalogue import CurveSpec, register_metric
from .representation_shift import RepresentationShift

_LOWER = quantus.helpers.enums.ScoreDirection.LOWER


def _seed(ctx) -> dict:
    return {"seed": ctx.seed}


@register_metric(defaults=_seed, text=(
    "The insertion twin of RepresentationShift: start from the baseline, reveal the top-M features by "
    "|attribution| and measure ||f(x) - f(x^M)||²; the normalised area over the fractions is smaller when "
    "the representation comes back faster."), curve=CurveSpec(
    "Representation shift as the top features are revealed on the baseline (mean, 95% band)",
    "% of features revealed (most important first)", "representation shift",
    "Insertion: a faithful method brings the representation back to f(x) with few features, far below "
    "Random."))
class RepresentationShiftInsertion(RepresentationShift):
    """Shift of f(x) from the representation of the baseline with the top-M units revealed (lower AUC is better).

    Parameters are :class:`RepresentationShift`'s. ``curves`` and :meth:`curve` hold s over the % of units
    revealed.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1, bias=False)).eval()
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1., 0, 0, 0]]))               # f reads feature 0 only
    >>> x, oracle = torch.ones(1, 1, 4).numpy(), torch.tensor([[[1., 0, 0, 0]]]).numpy()
    >>> [float(s) for s in RepresentationShiftInsertion(fractions=(0.25, 1.0))(net, x, a_batch=oracle)]
    [0.0]
    """

    name = "RepresentationShiftInsertion"
    order = "insertion"
    score_direction = _LOWER


@register_metric(defaults=_seed, text=(
    "RepresentationShift in ROAD's least-relevant-first order: mask the M least important features and "
    "measure ||f(x) - f(x_M)||²; a faithful attribution removes what the encoder ignores first, so the "
    "area is small."), curve=CurveSpec(
    "Representation shift when the least important features are masked first (mean, 95% band)",
    "% of features masked (least important first)", "representation shift",
    "LeRF: a faithful method keeps the representation in place while the unimportant features go, below "
    "Random."))
class RepresentationShiftLeRF(RepresentationShift):
    """Shift of the representation when the M *least* important units are masked (lower AUC is better).

    Parameters are :class:`RepresentationShift`'s; ``curves`` and :meth:`curve` hold s over the % masked.
    """

    name = "RepresentationShiftLeRF"
    order = "lerf"
    score_direction = _LOWER


__all__ = ["RepresentationShiftInsertion", "RepresentationShiftLeRF"]
