"""Functional twins of the pair metrics (:mod:`lfeval.metrics.similarity_shift`), torchmetrics style: the maths on
whole batches of pairs in torch, on the encoder's device and in its dtype.

A pair (a, b) has the similarity s(a, b) = <f(a), f(b)> (``"dot"``) or cos(f(a), f(b)) (``"cosine"``).

- :func:`similarity_shift_curve`: s(a_M, b) (or s(a_M, b_M) with both sides masked) when the top-M masking units
  of a (and of b) by ``|attribution|`` are replaced with the baseline (deletion) or are the only ones revealed on the
  baseline (insertion), for M = floor(p * F) at each fraction p;
- :func:`similarity_shift_scores`: the normalised areas of the drop s(a, b) - s(a_M, b) (deletion) or of the gain
  s(a_M, b) - s(r_a, b) over the fully masked pair (insertion); higher is better in both orders;
- :func:`completeness_error`: ``|Σ A - target|`` (relative: divided by ``|target|``).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity()).eval()      # f(x) = x
>>> a, b = torch.tensor([[[1., 2., 3., 4.]]]), torch.ones(1, 1, 4)
>>> importance = torch.tensor([[4., 3., 2., 1.]])                                   # feature 0 first
>>> values, s_ab, s_ref = similarity_shift_curve(net, a, b, importance, [0.25, 0.5, 1.0], baseline=0.0)
>>> values.tolist(), s_ab.tolist(), s_ref.tolist()                                  # 10 - 1, 10 - 1 - 2, 0
([[9.0, 7.0, 0.0]], [10.0], [0.0])
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..explain.pairs import SIMILARITIES
from ..memory import rows_per_pass
from ..validation import check_finite
from .functional import chunk_rows, fixed_units_last, mask_counts, normalised_auc, ordered_masks, perturbed_inputs

#: the similarities of a pair's latents (those pair explanations attribute)
PAIR_SIMILARITIES = SIMILARITIES
#: which inputs of a pair are masked
MASKED_SIDES = ("a", "both")
#: the curve orders of the pair metrics
PAIR_ORDERS = ("deletion", "insertion")


def latent_similarity(za: torch.Tensor, zb: torch.Tensor, kind: str = "dot") -> torch.Tensor:
    """s over the last axis of latents (..., d): the dot product or the cosine (0 for a zero latent)."""
    if kind == "dot":
        return (za * zb).sum(-1)
    if kind == "cosine":
        return F.cosine_similarity(za, zb, dim=-1, eps=torch.finfo(za.dtype).tiny)
    raise InvalidArgument(f"`similarity` must be one of {PAIR_SIMILARITIES}, got {kind!r}.")


def _check_importance(importance: torch.Tensor, x: torch.Tensor, name: str) -> None:
    if importance.ndim != 2 or len(importance) != len(x):
        raise InvalidInput(f"`{name}` must be (N, F) = ({len(x)}, n_units), got {tuple(importance.shape)}.")
    if importance.is_floating_point() and bool(torch.isnan(importance).any()):
        raise InvalidInput(f"`{name}` contains NaN, which ranks no feature; recompute the attributions.")


@torch.no_grad()
def similarity_shift_curve(encoder, a: torch.Tensor, b: torch.Tensor, importance_a: torch.Tensor,
                           fractions: Sequence[float], similarity: str = "dot", baseline=None,
                           importance_b: Optional[torch.Tensor] = None, mask_count: str = "floor",
                           order: str = "deletion", chunk_size: Optional[int] = None) -> tuple:
    """``(values (N, K), s_ab (N,), s_ref (N,))``: the pair similarity at each fraction, the unmasked s(a, b) and
    the fully masked one (s(r_a, b), or s(r_a, r_b) when b is masked too).

    ``importance_a`` (N, F) ranks a's masking units (:func:`lfeval.metrics.functional.unit_importance`); with
    ``importance_b`` b's units are masked as well, at the same fractions (``side="both"``). ``order="deletion"``
    replaces the top-M units with the baseline; ``"insertion"`` replaces all but the top-M (the baseline with the
    most important units revealed). On text, the units the baseline keeps ([CLS], [SEP], padding) come last
    (:func:`lfeval.metrics.functional.fixed_units_last`). Chunks of pairs are encoded in passes of about
    ``chunk_size`` inputs (default :func:`lfeval.metrics.functional.chunk_rows`), each pass holding a chunk's
    masked copies together with its unmasked inputs and baselines, so memory does not grow with N.
    """
    if order not in PAIR_ORDERS:
        raise InvalidArgument(f"`order` must be one of {PAIR_ORDERS}, got {order!r}.")
    if similarity not in PAIR_SIMILARITIES:
        raise InvalidArgument(f"`similarity` must be one of {PAIR_SIMILARITIES}, got {similarity!r}.")
    encoder = check_model(encoder, a)  # an lfeval.Encoder (a plain module is wrapped)
    check_finite(a, "a")
    check_finite(b, "b")
    if a.shape != b.shape:
        raise InvalidInput(f"`a` and `b` must have the same shape (one pair per row), got {tuple(a.shape)} and "
                           f"{tuple(b.shape)}.")
    _check_importance(importance_a, a, "importance_a")
    if importance_b is not None:
        _check_importance(importance_b, b, "importance_b")
    n, n_feat = importance_a.shape
    shape = tuple(a.shape[1:])
    counts = mask_counts(fractions, n_feat, mask_count, device=a.device)
    k = len(counts)
    importance_a = fixed_units_last(encoder, a, importance_a, baseline, order)
    if importance_b is not None:
        importance_b = fixed_units_last(encoder, b, importance_b, baseline, order)
    rows = chunk_rows(shape, a.device) if chunk_size is None else rows_per_pass(math.prod(shape), chunk_size,
                                                                                device=a.device)
    per_pair = 2 * (k + 2) if importance_b is not None else k + 4
    step = max(1, rows // per_pair)
    values, s_ab, s_ref = [], [], []
    for i in range(0, n, step):
        xa, xb = a[i:i + step], b[i:i + step]
        m = len(xa)
        ra, rb = encoder.baseline_for(xa, baseline), encoder.baseline_for(xb, baseline)
        ma = perturbed_inputs(encoder, xa, ordered_masks(importance_a[i:i + step], counts, order), baseline)
        parts = [ma, xa, ra, xb, rb]
        if importance_b is not None:
            parts.append(perturbed_inputs(encoder, xb, ordered_masks(importance_b[i:i + step], counts, order),
                                          baseline))
        z = encoder(torch.cat(parts))
        za_m, z = z[:m * k].view(m, k, -1), z[m * k:]
        za, zra, zb, zrb, z = z[:m], z[m:2 * m], z[2 * m:3 * m], z[3 * m:4 * m], z[4 * m:]
        if importance_b is not None:
            zb_m = z.view(m, k, -1)
            values.append(latent_similarity(za_m, zb_m, similarity))
            s_ref.append(latent_similarity(zra, zrb, similarity))
        else:
            values.append(latent_similarity(za_m, zb.unsqueeze(1), similarity))
            s_ref.append(latent_similarity(zra, zb, similarity))
        s_ab.append(latent_similarity(za, zb, similarity))
    values, s_ab, s_ref = torch.cat(values), torch.cat(s_ab), torch.cat(s_ref)
    if not (bool(torch.isfinite(values).all()) and bool(torch.isfinite(s_ab).all())):
        raise InvalidInput("The pair similarities are NaN/inf: the encoder returned NaN/inf latents or the dot "
                           "product overflowed; pass finite inputs and baseline on a moderate scale.")
    return values, s_ab, s_ref


def similarity_shift_scores(values: torch.Tensor, s_ab: torch.Tensor, s_ref: torch.Tensor,
                            fractions: Sequence[float], order: str = "deletion") -> torch.Tensor:
    """Per-pair scores (N,), higher is better: the normalised area (trapezoid over the fractions divided by their
    range) of the similarity drop s(a, b) - values for deletion (a faithful attribution makes s fall fast) or of
    the gain values - s_ref over the fully masked pair for insertion (s rises fast).

    >>> similarity_shift_scores(torch.tensor([[9., 7., 0.]]), torch.tensor([10.]), torch.tensor([0.]),
    ...                         [0.0, 0.5, 1.0]).tolist()
    [4.25]
    """
    if order == "deletion":
        curves = s_ab[:, None] - values
    elif order == "insertion":
        curves = values - s_ref[:, None]
    else:
        raise InvalidArgument(f"`order` must be one of {PAIR_ORDERS}, got {order!r}.")
    return normalised_auc(curves, torch.as_tensor(fractions, dtype=curves.dtype, device=curves.device))


def completeness_error(total: torch.Tensor, target: torch.Tensor, relative: bool = True,
                       eps: float = 1e-12) -> torch.Tensor:
    """``|total - target|`` (N,), divided by ``max(|target|, eps)`` when ``relative``: how far the explanation's sum
    ``total`` is from the similarity change it should add up to.

    >>> completeness_error(torch.tensor([1.1, 2.0]), torch.tensor([1.0, -2.0])).tolist()   # doctest: +ELLIPSIS
    [0.100000..., 2.0]
    """
    err = (total - target).abs()
    return err / target.abs().clamp_min(eps) if relative else err


__all__ = ["PAIR_SIMILARITIES", "MASKED_SIDES", "PAIR_ORDERS", "latent_similarity", "similarity_shift_curve",
           "similarity_shift_scores", "completeness_error"]
