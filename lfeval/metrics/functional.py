"""Functional twins of lfeval's metrics (torchmetrics style): the maths on tensors, which the
``quantus.Metric`` classes call. Inputs are whole batches; nothing loops over samples.

>>> import torch
>>> feature_ranks(torch.tensor([[0.1, 0.9, 0.5]]))          # 0 = most important
tensor([[2, 0, 1]])
>>> top, bottom = similarity_rates(torch.tensor([[3., 2., 1., 0.]]), torch.tensor([0, 0, 1, 1]),
...                                torch.tensor([0]), counts=[1, 2])
>>> top.tolist(), bottom.tolist()                           # same-label share of the top / bottom M
([[1.0, 1.0]], [[0.0, 0.0]])
>>> float(normalised_auc(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([0.0, 0.5, 1.0]))[0])
0.75
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import InvalidArgument

DISTANCES = ("squared_l2", "normalised_l2", "cosine")
CORRELATIONS = ("pearson", "spearman")


def feature_ranks(importance: torch.Tensor) -> torch.Tensor:
    """Rank of each feature per sample, 0 = most important. ``importance``: (N, F) -> (N, F) int64."""
    order = torch.argsort(importance, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def mask_counts(fractions: Sequence[float], n_features: int, device=None) -> torch.Tensor:
    """Features masked at each fraction: M = round(p * F), at least 1."""
    return torch.clamp(torch.round(torch.as_tensor(fractions, dtype=torch.float64, device=device) * n_features),
                       min=1).long()


def representation_distance(z: torch.Tensor, z_masked: torch.Tensor, distance: str = "squared_l2") -> torch.Tensor:
    """Shift between latents (..., d): squared L2 (paper), squared L2 / ||z||^2, or 1 - cosine."""
    if distance == "squared_l2":
        return (z - z_masked).pow(2).sum(-1)
    if distance == "normalised_l2":
        return (z - z_masked).pow(2).sum(-1) / z.pow(2).sum(-1).clamp_min(1e-12)
    if distance == "cosine":
        return 1 - F.cosine_similarity(z, z_masked, dim=-1)
    raise InvalidArgument(f"`distance` must be one of {DISTANCES}, got {distance!r}.")


def unit_importance(encoder, attributions: torch.Tensor, shape: tuple, per_channel: bool = False) -> torch.Tensor:
    """Importance (N, F) of the encoder's masking units (its modality's: pixels summed over channels for
    images), or of every entry with ``per_channel``."""
    if per_channel:
        return attributions.abs().reshape(len(attributions), -1)
    return encoder.modality.unit_importance(attributions, shape)


@torch.no_grad()
def representation_shift_curve(encoder, x: torch.Tensor, importance: torch.Tensor, fractions: Sequence[float],
                               baseline=None, distance: str = "squared_l2", chunk_size: int = 512) -> torch.Tensor:
    """Shifts (N, K) of f when the top-M units by ``importance`` (N, F) are replaced with the baseline, for
    M = :func:`mask_counts` of each fraction (Crabbé & van der Schaar 2022, §4.1).

    All N x K masked inputs come from one rank + comparison and are encoded in chunks of ``chunk_size``.
    """
    n, n_feat = importance.shape
    shape = tuple(x.shape[1:])
    m = mask_counts(fractions, n_feat, device=x.device)
    masks = feature_ranks(importance)[:, None, :] < m[None, :, None]  # (N, K, F)
    units = shape if n_feat == x[0].numel() else encoder.modality.unit_shape(shape)
    masks = masks.view(n, len(m), *units)
    base = encoder.baseline_for(x, baseline)
    z = encoder(x)
    masked = torch.where(masks, base.unsqueeze(1), x.unsqueeze(1)).reshape(n * len(m), *shape)
    zm = torch.cat([encoder(masked[i:i + chunk_size]) for i in range(0, len(masked), chunk_size)])
    return representation_distance(z.unsqueeze(1), zm.view(n, len(m), -1), distance)


def normalised_auc(curves: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves (N, K) over x (K,), divided by the x range: (N,)."""
    x = torch.as_tensor(x, dtype=curves.dtype, device=curves.device)
    return torch.trapezoid(curves, x, dim=-1) / (x[-1] - x[0])


def similarity_rates(importance: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor,
                     counts: Sequence[int]) -> tuple:
    """Same-label rate of the top-M and bottom-M training examples of each test example, for each M in
    ``counts`` (paper §4.1, Fig. 3): ``(top (N, K), bottom (N, K))``."""
    y = torch.as_tensor(y_test).reshape(-1, 1)
    y_train = torch.as_tensor(y_train)
    counts = torch.as_tensor(list(counts))
    k = int(counts.max())
    top = y_train[torch.topk(importance, k, dim=1).indices] == y  # (N, k), most important first
    bottom = y_train[torch.topk(-importance, k, dim=1).indices] == y
    steps = torch.arange(1, k + 1)
    return (top.cumsum(1).float() / steps)[:, counts - 1], (bottom.cumsum(1).float() / steps)[:, counts - 1]


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks along the last axis (ties broken by position), for Spearman."""
    return torch.argsort(torch.argsort(v, dim=-1, stable=True), dim=-1).to(v.dtype)


def rowwise_correlation(a: torch.Tensor, b: torch.Tensor, kind: str = "pearson") -> torch.Tensor:
    """Correlation of each row of a with the same row of b: (N, D), (N, D) -> (N,). NaN for a constant row."""
    if kind == "spearman":
        a, b = _ranks(a), _ranks(b)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


def pooled_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of all entries of a and b (the paper pools over all test pixels / the matrix)."""
    return float(rowwise_correlation(a.reshape(1, -1).double(), b.reshape(1, -1).double())[0])


__all__ = ["DISTANCES", "CORRELATIONS", "feature_ranks", "mask_counts", "representation_distance", "unit_importance",
           "representation_shift_curve", "normalised_auc", "similarity_rates", "rowwise_correlation",
           "pooled_correlation", "noisy_linear_imputation"]


def _neighbour_sum(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k v[s + k] over the unit axes of v (B, 1, *S), zero outside the sample (conv with padding)."""
    pad = tuple(k // 2 for k in kernel.shape)
    conv = torch.nn.functional.conv2d if kernel.ndim == 2 else torch.nn.functional.conv1d
    return conv(v, kernel.view(1, 1, *kernel.shape), padding=pad)


def noisy_linear_imputation(x: torch.Tensor, mask: torch.Tensor, kernel, noise: float = 0.01, baseline=None,
                            generator=None, tol: float = 1e-7, max_iter: int = 2000) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022), batched in torch.

    Every removed value (``mask`` True, shape broadcastable to ``x`` (N, C, *S) with the unit axes S last)
    becomes the weighted mean of its in-bounds neighbours under ``kernel`` (the modality's: 1/6 for the 4
    direct and 1/12 for the 4 diagonal neighbours of a pixel; 1/2 for the two neighbours of a time step),
    removed neighbours included: one sparse linear system per sample and channel, solved jointly by conjugate
    gradients (float64). N(0, noise²) is then added to the imputed values. With ``kernel=None`` (tabular
    rows: no neighbours) removed values take ``baseline`` plus the noise.
    """
    mask = mask.expand_as(x)
    if kernel is None:
        filled = torch.where(mask, baseline.expand_as(x), x)
    else:
        spatial = x.shape[2:]
        k = torch.as_tensor(kernel, dtype=torch.float64, device=x.device)
        m = mask.reshape(-1, 1, *spatial).to(torch.float64)
        v = x.reshape(-1, 1, *spatial).to(torch.float64)
        weight = _neighbour_sum(torch.ones(1, 1, *spatial, dtype=torch.float64, device=x.device), k)

        def apply(u):  # (D - K_UU) u on the removed entries
            return m * (weight * u - _neighbour_sum(m * u, k))

        rhs = m * _neighbour_sum((1 - m) * v, k)
        dims = tuple(range(1, rhs.ndim))
        sol, res = torch.zeros_like(rhs), rhs.clone()
        direction, rr = res.clone(), (res * res).sum(dims, keepdim=True)
        stop = tol * tol * rr.clamp_min(1e-30)
        for _ in range(max_iter):
            if bool((rr <= stop).all()):
                break
            ap = apply(direction)
            alpha = rr / (direction * ap).sum(dims, keepdim=True).clamp_min(1e-300)
            sol, res = sol + alpha * direction, res - alpha * ap
            rr_new = (res * res).sum(dims, keepdim=True)
            direction, rr = res + (rr_new / rr.clamp_min(1e-300)) * direction, rr_new
        filled = torch.where(mask, sol.reshape(x.shape).to(x.dtype), x)
    if noise > 0:
        jitter = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) * noise
        filled = torch.where(mask, filled + jitter, filled)
    return filled
