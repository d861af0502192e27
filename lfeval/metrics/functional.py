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

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidArgument

DISTANCES = ("squared_l2", "normalised_l2", "cosine")
MASK_COUNTS = ("floor", "round")
CORRELATIONS = ("pearson", "spearman")


def feature_ranks(importance: torch.Tensor) -> torch.Tensor:
    """Rank of each feature per sample, 0 = most important. ``importance``: (N, F) -> (N, F) int64."""
    order = torch.argsort(importance, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def top_masks(importance: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Masks (N, K, F) of the ``counts[k]`` most important features of each sample: ``feature_ranks(importance)
    < counts`` (ties: lower feature index first), without a full argsort.

    A float32 importance becomes one unique int64 key per feature (its order-preserving bit pattern, then the
    feature index), so one value sort of the keys gives exact thresholds; NumPy's vectorised sort does this on
    the CPU several times faster than ``torch.argsort`` (GPU: ``torch.sort``).

    >>> top_masks(torch.tensor([[0.1, 0.9, 0.5, 0.9]]), torch.tensor([0, 1, 3])).int().tolist()
    [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 1]]]
    """
    keys, thresholds = _top_keys(importance, counts)
    return keys[:, None, :] <= thresholds[:, :, None]


def _top_keys(importance: torch.Tensor, counts) -> tuple:
    """(keys (N, F), thresholds (N, K)) with ``keys <= thresholds[:, k]`` the top ``counts[k]`` features."""
    counts = torch.as_tensor(counts, device=importance.device).long()
    if importance.dtype != torch.float32:  # exact ranks, then keys = ranks
        ranks = feature_ranks(importance)
        return ranks, (counts - 1).expand(len(ranks), -1)
    n_feat = importance.shape[1]
    bits = (importance.detach() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # signed-int order = float order
    keys = torch.arange(n_feat, device=importance.device) - (bits.long() << 31)  # ascending: most important first
    if keys.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(keys.numpy(), axis=1))
    else:
        ordered = torch.sort(keys, dim=1).values
    thresholds = ordered[:, (counts - 1).clamp(0, n_feat - 1)]
    thresholds[:, counts == 0] = torch.iinfo(torch.int64).min  # M = 0: none
    return keys, thresholds


def mask_counts(fractions: Sequence[float], n_features: int, rule: str = "floor", device=None) -> torch.Tensor:
    """Features masked at each fraction p of ``n_features`` = d.

    ``rule="floor"`` (default): M = floor(p * d), as the paper's experiments (lfxai 0.1.1, ``mask_size =
    int(pert_percentage * W**2 / 100)``). The floor is taken with a 1e-9 tolerance, so that 0.29 * 100 gives 29
    like the paper's integer percentages (plain ``int(0.29 * 100)`` is 28). M may be 0 for p < 1/d: nothing is
    masked at that fraction and its shift is 0, as in the paper's code (the metric warns).
    ``rule="round"``: M = round(p * d) (half to even), at least 1.

    >>> mask_counts([0.05, 0.1, 0.2, 0.5, 0.8, 1.0], 64).tolist()            # 8x8 digits
    [3, 6, 12, 32, 51, 64]
    >>> mask_counts([0.05, 0.1, 0.2, 0.5, 0.8, 1.0], 64, rule="round").tolist()
    [3, 6, 13, 32, 51, 64]
    """
    if rule not in MASK_COUNTS:
        raise InvalidArgument(f"`mask_count` must be one of {MASK_COUNTS}, got {rule!r}.")
    p = torch.as_tensor(fractions, dtype=torch.float64, device=device) * n_features
    if rule == "floor":
        return torch.floor(p + 1e-9).long()
    return torch.clamp(torch.round(p), min=1).long()


def chunk_rows(sample_shape: tuple, device=None, budget: Optional[int] = None) -> int:
    """Inputs per forward pass for inputs of ``sample_shape``: about ``budget`` input values per pass. On the
    CPU, 2**15 per torch thread, so a pass's activations stay in cache (1 thread: 512 8x8 digits or 41 28x28
    images; 2 threads: 1024 or 83); on a GPU, 2**22."""
    if budget is None:
        on_gpu = torch.device(device or "cpu").type == "cuda"
        budget = 2 ** 22 if on_gpu else 2 ** 15 * torch.get_num_threads()
    return max(1, budget // max(1, math.prod(sample_shape)))


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
                               baseline=None, distance: str = "squared_l2", chunk_size: Optional[int] = None,
                               mask_count: str = "floor") -> torch.Tensor:
    """Shifts (N, K) of f when the top-M units by ``importance`` (N, F) are replaced with the baseline, for
    M = :func:`mask_counts` of each fraction with rule ``mask_count`` (Crabbé & van der Schaar 2022, §4.1).

    Chunk by chunk of samples, the top features are found (:func:`top_masks`) and each sample's inputs (itself,
    then masked at each fraction) are built and encoded in one pass of about ``chunk_size`` inputs (default:
    :func:`chunk_rows`): memory stays bounded by the chunk and f(x) shares the passes of its masked copies. A
    fraction that masks every unit gives the baseline itself: when the baseline is one input shared by the batch
    (a number or one input's tensor), f(baseline) is encoded once.
    """
    n, n_feat = importance.shape
    shape = tuple(x.shape[1:])
    counts = mask_counts(fractions, n_feat, mask_count, device=x.device)
    base = encoder.baseline_for(x, baseline)
    shared = n > 1 and base.stride(0) == 0  # one baseline expanded over the batch
    full = (counts >= n_feat) & shared  # these levels are f(baseline) for every sample
    levels = torch.cat([counts.new_zeros(1), counts[~full]])  # level 0 (M = 0): x itself
    units = shape if n_feat == x[0].numel() else encoder.modality.unit_shape(shape)
    n_levels, encode_base = len(levels), bool(full.any())
    step = max(1, int(chunk_size or chunk_rows(shape, x.device)) // n_levels)  # samples per pass
    z, z_base = [], None
    block = step * max(1, 4096 // step)  # keys and thresholds per block of samples, masks per pass
    for i in range(0, n, step):
        if i % block == 0:
            keys, thresholds = _top_keys(importance[i:i + block], levels)
        j = i % block
        masks = (keys[j:j + step, None, :] <= thresholds[j:j + step, :, None]).view(-1, n_levels, *units)
        inputs = torch.where(masks, base[i:i + step].unsqueeze(1), x[i:i + step].unsqueeze(1))
        inputs = inputs.reshape(-1, *shape)
        if encode_base and i == 0:  # f(baseline) rides along in the first pass
            out = encoder(torch.cat([inputs, base[:1]]))
            z, z_base = [out[:-1]], out[-1:]
        else:
            z.append(encoder(inputs))
    z = torch.cat(z).view(n, n_levels, -1)
    zm = z.new_empty(n, len(counts), z.shape[-1])
    zm[:, ~full] = z[:, 1:]
    if encode_base:
        zm[:, full] = z_base.unsqueeze(1)
    return representation_distance(z[:, :1], zm, distance)


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


__all__ = ["DISTANCES", "MASK_COUNTS", "CORRELATIONS", "feature_ranks", "top_masks", "mask_counts", "chunk_rows",
           "representation_distance", "unit_importance", "representation_shift_curve", "normalised_auc",
           "similarity_rates", "rowwise_correlation", "pooled_correlation"]
