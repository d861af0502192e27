"""Distance Explainer (Meijer et al. 2025, "Explainable embeddings with Distance Explainer"; the
``distance-explainer`` package, 0.6.0): why is f(a) close to a reference embedding f(b)?

RISE-style masking. K random masks M_k in [0, 1] over the input's masking units are applied to a
(masked units take the baseline: a ⊙ M + r ⊙ (1 - M); the package's a ⊙ M is the baseline r = 0), and each
masked input's distance to the reference is

    d_k = (1 - cos(f(a ⊙ M_k), f(b))) / 2  in [0, 1]        (``DistanceExplainer.calculate_distances``).

The masks are sorted by d_k. The attribution is the mean of the masks in the lowest distance range (by
default the closest 10%: positions [int(K * 0), int(K * 0.1)) of the ascending order) minus the mean of the
masks in the "negative" range (the farthest 10%: [int(K * 0.9), int(K * 1.0))): a unit scores high when keeping
it brings f(a) close to f(b) and low when keeping it pushes f(a) away (``explain_image_distance``). The package's
``mask_weights`` (exp(-d)) only feed its printed statistics; they do not weigh the map, and neither do they here.

Masks (``dianna.utils.maskers.generate_interpolated_float_masks_for_image``): a ``feature_res`` x
``feature_res`` grid of Bernoulli(``p_keep``) cells, upsampled bilinearly (scikit-image ``resize``, order 1,
``mode="reflect"``, no anti-aliasing) to (feature_res + 1) * ceil(H / feature_res) per axis and cropped at a
random offset in [0, ceil(H / feature_res)) per axis. lfeval draws the cells and offsets from one seeded CPU
generator (the same masks on every device), upsamples with the exact interpolation matrices of that resize
(:func:`interpolation_matrix`, equal to scikit-image's to float32 rounding) and crops by indexing those
matrices, all masks at once; the K masks are shared by the inputs of a call, so each input's map depends only
on the input (batch-invariant). Every (input, mask) pair is encoded in whole batches on the encoder's device
and in its dtype; the selection is a sort per input and the map one matrix product (float64), with no Python
loop over samples or masks.

Modalities: images use 2-D masks over pixels (shared by the channels, the package's (H, W, 1) masks); time
series the same construction in 1-D over time steps (shared by the channels); tabular rows keep each feature
with probability ``p_keep`` (no spatial order); text keeps or deletes whole tokens (binary masks over positions,
the modality's token baseline, as RELAX) -- a float mask of token ids would mean nothing.

As a pair method: :func:`explain_distance` (``explain_pairs(model, a, b, method="DistanceExplainer")``)
explains a's features for its distance to f(b); without a partner (``lfeval.explain``) the reference is f(a)
itself, RELAX's setting.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
>>> a, b = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
>>> attr = explain_distance(net, a, b, n_masks=64, feature_res=4)
>>> attr.shape, bool((attr[:, :1] == attr).all())          # one value per pixel, shared by channels
((3, 1, 8, 8), True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..draws import draw
from ..errors import InvalidArgument
from ..validation import check_positive_int
from .base import register_explainer
from .masking import MaskingExplainer
from .pairs import explain_pairs

#: the package's defaults (``DistanceExplainer.__init__``)
DEFAULTS = dict(n_masks=1000, feature_res=8, p_keep=0.5, mask_selection_range_min=0.0, mask_selection_range_max=0.1,
                mask_selection_negative_range_min=0.9, mask_selection_negative_range_max=1.0)


def interpolation_matrix(n_in: int, n_out: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(n_out, n_in): linear resampling of n_in cells to n_out samples as scikit-image's
    ``resize(..., order=1, mode="reflect", anti_aliasing=False)`` (``scipy.ndimage.zoom`` with ``grid_mode=True``
    and ndimage's ``"mirror"`` boundary): sample i reads the cell coordinate (i + 0.5) * n_in / n_out - 0.5,
    mirrored about the first and last cell centres.

    >>> interpolation_matrix(2, 4).tolist()
    [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]]
    """
    i = torch.arange(n_out, dtype=torch.float64)
    u = (i + 0.5) * (n_in / n_out) - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        u = torch.remainder(u, period)
        u = torch.where(u > n_in - 1, period - u, u)
    else:
        u = torch.zeros_like(u)
    lo = u.floor().clamp(0, n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = u - lo
    out = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    out.index_put_((rows, lo.long()), 1 - w, accumulate=True)
    out.index_put_((rows, hi.long()), w, accumulate=True)
    return out.to(device=device, dtype=dtype)


def draw_grids(n_masks: int, size: tuple, feature_res: int = 8, p_keep: float = 0.5, seed: int = 0) -> tuple:
    """The random part of :func:`distance_masks`, on the CPU from one seeded generator: ``(cells (K,
    *[feature_res] * n_dims) float32 in {0, 1}, offsets (n_dims, K) long)``; offsets along axis j are in [0,
    ceil(size_j / feature_res))."""
    gen = torch.Generator().manual_seed(int(seed))
    cells = (torch.rand(n_masks, *((feature_res,) * len(size)), generator=gen) < p_keep).float()
    cell = [math.ceil(s / feature_res) for s in size]
    offsets = torch.stack([torch.randint(0, c, (n_masks,), generator=gen) for c in cell])
    return cells, offsets


def grid_masks(cells: torch.Tensor, offsets: torch.Tensor, size: tuple) -> torch.Tensor:
    """Masks ``(K, *size)`` from cells ``(K, *[R] * n_dims)`` and crop offsets (n_dims, K): each cell grid upsampled to
    (R + 1) * ceil(size_j / R) per axis (:func:`interpolation_matrix`) and cropped at its offset; computed on the
    cells' device in their dtype, the crop folded into the interpolation matrices (one einsum, no loop)."""
    res = cells.shape[-1]
    mats = []
    for j, s in enumerate(size):
        up = (res + 1) * math.ceil(s / res)
        mat = interpolation_matrix(res, up, dtype=cells.dtype, device=cells.device)  # (up, R)
        index = offsets[j].to(cells.device)[:, None] + torch.arange(s, device=cells.device)  # (K, s)
        mats.append(mat[index])  # (K, s, R)
    if len(size) == 2:
        return torch.einsum("khi,kij,kwj->khw", mats[0], cells, mats[1])
    if len(size) == 1:
        return torch.einsum("kti,ki->kt", mats[0], cells)
    raise InvalidArgument(f"Distance Explainer masks are 1-D or 2-D, got a size of {len(size)} axes.")


def distance_masks(n_masks: int, size: tuple, feature_res: int = 8, p_keep: float = 0.5, seed: int = 0,
                   device=None, dtype=torch.float32) -> torch.Tensor:
    """The package's interpolated float masks ``(K, *size)`` in [0, 1] for ``size`` (H, W) (or (T,)), drawn from
    ``seed`` (the same on every device); feed ``masks[..., None]`` to ``distance_explainer.DistanceExplainer.
    explain_image_distance(..., masks=...)`` to run the package on the very same masks."""
    check_mask_geometry(size, feature_res)
    cells, offsets = draw_grids(n_masks, tuple(size), feature_res, p_keep, seed)
    return grid_masks(cells.to(device=device, dtype=dtype), offsets, tuple(size))


def check_mask_geometry(size: tuple, feature_res) -> None:
    """Refuse a ``feature_res`` (cells per axis) that is not a positive integer or exceeds the masked axes."""
    feature_res = check_positive_int(feature_res, "feature_res")
    if feature_res > min(size):
        raise InvalidArgument(f"`feature_res`={feature_res} cells per axis is more than the input has along an axis "
                              f"({tuple(size)}); pass feature_res <= {min(size)}.")


def selection_weights(distances: torch.Tensor, ranges: tuple) -> torch.Tensor:
    """(N, K) float64 weights of the masks: +1/n_low on the masks at ascending-distance positions
    [int(K * lo_min), int(K * lo_max)) and -1/n_high on those at [int(K * hi_min), int(K * hi_max)) (the
    package's percentile ranges, each mean left out when its range is empty). Ties keep mask order.

    >>> selection_weights(torch.tensor([[0.3, 0.1, 0.2, 0.4]]), (0.0, 0.25, 0.75, 1.0)).tolist()
    [[0.0, 1.0, 0.0, -1.0]]
    """
    lo_min, lo_max, hi_min, hi_max = ranges
    n, k = distances.shape
    order = torch.argsort(distances, dim=1, stable=True)
    weights = torch.zeros(n, k, dtype=torch.float64, device=distances.device)
    for start, stop, sign in ((int(k * lo_min), int(k * lo_max), 1.0), (int(k * hi_min), int(k * hi_max), -1.0)):
        start, stop = max(0, start), min(k, stop)
        if stop > start:
            picked = order[:, start:stop]
            weights.scatter_add_(1, picked, torch.full(picked.shape, sign / (stop - start), dtype=torch.float64,
                                                       device=distances.device))
    return weights


def reference_distance(z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """The package's distance (1 - cos(z, z_ref)) / 2 in [0, 1], in float64 (scikit-learn's cosine distance,
    clipped to [0, 2], halved)."""
    cos = F.cosine_similarity(z.double(), z_ref.double(), dim=-1, eps=1e-30)
    return (1 - cos).clamp(0, 2) / 2


@register_explainer("DistanceExplainer")
class DistanceExplainer(MaskingExplainer):
    """Distance Explainer of an encoder for a reference latent (module docstring).

    Options (the package's names and defaults): ``n_masks`` (1000), ``feature_res`` (8 cells per axis),
    ``p_keep`` (0.5), ``mask_selection_range_min`` / ``_max`` (0, 0.1: the closest masks, weight +1) and
    ``mask_selection_negative_range_min`` / ``_max`` (0.9, 1: the farthest, weight -1). ``batch_size`` bounds the
    masked inputs per forward pass; ``seed`` draws the masks. On 8x8 digits ``feature_res=4`` gives 2x2-pixel cells.
    """

    option_names = tuple(DEFAULTS)
    passes_per_input = DEFAULTS["n_masks"]

    def expansion(self, options: dict) -> int:
        value = options.get("n_masks", DEFAULTS["n_masks"])
        return value if isinstance(value, int) and value > 0 else DEFAULTS["n_masks"]

    def attribute_batch(self, x, z_ref, baseline, seed, n_masks: int = 1000, feature_res: int = 8,
                        p_keep: float = 0.5, mask_selection_range_min: float = 0.0,
                        mask_selection_range_max: float = 0.1, mask_selection_negative_range_min: float = 0.9,
                        mask_selection_negative_range_max: float = 1.0):
        n_masks = check_positive_int(n_masks, "n_masks")
        if not 0 < float(p_keep) < 1:
            raise InvalidArgument(f"`p_keep` must be in (0, 1), got {p_keep}.")
        ranges = (mask_selection_range_min, mask_selection_range_max, mask_selection_negative_range_min,
                  mask_selection_negative_range_max)
        for name, value in zip(("mask_selection_range_min", "mask_selection_range_max",
                                "mask_selection_negative_range_min", "mask_selection_negative_range_max"), ranges):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InvalidArgument(f"`{name}` must be a fraction in [0, 1] of the masks, got {value!r}.")
        if int(n_masks * ranges[1]) <= int(n_masks * ranges[0]) and int(n_masks * ranges[3]) <= int(
                n_masks * ranges[2]):
            raise InvalidArgument(f"Both mask selection ranges are empty for n_masks={n_masks}: widen "
                                  "mask_selection_range_* or mask_selection_negative_range_*, or draw more masks.")
        shape = tuple(x.shape[1:])
        units, size = self.mask_layout(shape)
        if size is not None:
            check_mask_geometry(size, feature_res)
            cells, offsets = draw_grids(n_masks, size, feature_res, float(p_keep), seed)
        else:
            gen = torch.Generator().manual_seed(int(seed))
            cells, offsets = draw(torch.rand, (n_masks, *units), gen, torch.empty(0)) < float(p_keep), None

        def masks(start: int, stop: int) -> torch.Tensor:  # (b, *units) in x's dtype on x's device
            if size is None:
                return cells[start:stop].to(x.device, x.dtype).reshape(stop - start, *units)
            m = grid_masks(cells[start:stop].to(x.device, x.dtype), offsets[:, start:stop], size)
            return m.reshape(stop - start, *units)

        n, n_units = len(x), int(torch.Size(units).numel())
        block = max(1, self._rows // n)
        distances = []
        with torch.no_grad():
            for start in range(0, n_masks, block):
                stop = min(start + block, n_masks)
                m = masks(start, stop)
                masked = self.masked(x, m, baseline)
                z = self.encoder(masked).view(n, stop - start, -1)
                distances.append(reference_distance(z, z_ref.unsqueeze(1)))
            weights = selection_weights(torch.cat(distances, 1), ranges)  # (N, K)
            saliency = torch.zeros(n, n_units, dtype=torch.float64, device=x.device)
            for start in range(0, n_masks, block):
                stop = min(start + block, n_masks)
                saliency += weights[:, start:stop] @ masks(start, stop).reshape(stop - start, n_units).double()
        return saliency.view(n, *units).expand(n, *shape).to(x.dtype)


def explain_distance(model, a, b, baseline=None, batch_size: int = 256, seed: int = 0, **options) -> np.ndarray:
    """Distance Explainer attributions of each a_i for its distance to f(b_i) (a single b: one reference for
    every a), float32 NumPy of a's shape: :func:`lfeval.explain.pairs.explain_pairs` with
    ``method="DistanceExplainer"`` (its cosine distance is the same for the dot and cosine similarities)."""
    return explain_pairs(model, a, b, method="DistanceExplainer", similarity="dot", side="a", baseline=baseline,
                         batch_size=batch_size, seed=seed, **options)


__all__ = ["DistanceExplainer", "explain_distance", "distance_masks", "draw_grids", "grid_masks",
           "interpolation_matrix", "selection_weights", "reference_distance", "DEFAULTS"]
