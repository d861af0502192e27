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
#: perturbation orders: remove the most relevant first (MoRF, deletion), reveal the most relevant first starting
#: from the baseline (insertion), remove the least relevant first (LeRF, ROAD's second order)
ORDERS = ("deletion", "insertion", "lerf")


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


def ordered_masks(importance: torch.Tensor, counts: torch.Tensor, order: str = "deletion") -> torch.Tensor:
    """Bool (N, K, F): True where a feature is replaced with the baseline at step k, for ``counts`` (K,) features
    taken in ``order`` by ``importance`` (N, F).

    ``"deletion"`` masks the top-M features (most relevant first, MoRF), ``"lerf"`` the bottom-M (least relevant
    first, ROAD's LeRF) and ``"insertion"`` every feature *but* the top-M (start from the baseline and reveal the
    most relevant first; Petsiuk et al. 2018, COCOA's insertion curve).

    >>> ordered_masks(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([1, 2]), "insertion").int().tolist()
    [[[0, 1, 1], [0, 1, 0]]]
    """
    ranks = feature_ranks(importance)[:, None, :]
    m = torch.as_tensor(counts, device=importance.device)[None, :, None]
    if order == "deletion":
        return ranks < m
    if order == "insertion":
        return ranks >= m
    if order == "lerf":
        return ranks >= importance.shape[1] - m
    raise InvalidArgument(f"`order` must be one of {ORDERS}, got {order!r}.")


def perturbed_inputs(encoder, x: torch.Tensor, masks: torch.Tensor, baseline=None) -> torch.Tensor:
    """The (N * K, *shape) inputs of masks (N, K, F) over the encoder's masking units (or every entry, when F is
    the number of entries): masked units take the baseline's values."""
    n, k, n_feat = masks.shape
    shape = tuple(x.shape[1:])
    units = shape if n_feat == x[0].numel() else encoder.modality.unit_shape(shape)
    masks = masks.view(n, k, *units)
    base = encoder.baseline_for(x, baseline)
    return torch.where(masks, base.unsqueeze(1), x.unsqueeze(1)).reshape(n * k, *shape)


def encode_chunks(encoder, x: torch.Tensor, chunk_size: int = 512) -> torch.Tensor:
    """f(x) in forward passes of ``chunk_size`` rows (fewer for large inputs: :func:`lfeval.memory.rows_per_pass`)."""
    from ..memory import rows_per_pass

    step = rows_per_pass(x[0].numel(), chunk_size)
    return torch.cat([encoder(x[i:i + step]) for i in range(0, len(x), step)])


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
                               baseline=None, distance: str = "squared_l2", chunk_size: int = 512,
                               order: str = "deletion") -> torch.Tensor:
    """Shifts (N, K) of f when the top-M units by ``importance`` (N, F) are replaced with the baseline, for
    M = :func:`mask_counts` of each fraction (Crabbé & van der Schaar 2022, §4.1).

    ``order="insertion"`` replaces every unit but the top-M (the insertion twin: the baseline with the most
    important units revealed) and ``order="lerf"`` the bottom-M (least relevant first); see :func:`ordered_masks`.
    All N x K masked inputs come from one rank + comparison and are encoded in chunks of ``chunk_size``.
    """
    n, n_feat = importance.shape
    m = mask_counts(fractions, n_feat, device=x.device)
    masked = perturbed_inputs(encoder, x, ordered_masks(importance, m, order), baseline)
    z = encoder(x)
    zm = encode_chunks(encoder, masked, chunk_size)
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


def membership_rates(importance: torch.Tensor, member: torch.Tensor, counts: Sequence[int]) -> tuple:
    """Share of the top-M and bottom-M training examples by ``importance`` (N, n_train) for which ``member``
    (N, n_train) is True, for each M in ``counts``: ``(top (N, K), bottom (N, K))``. :func:`similarity_rates`
    with ``member = (y_train == y_test)``; the label-free rates use pseudo-labels or latent neighbourhoods."""
    counts = torch.as_tensor(list(counts))
    k = int(counts.max())
    member = torch.as_tensor(member).bool()
    top = member.gather(1, torch.topk(importance, k, dim=1).indices)
    bottom = member.gather(1, torch.topk(-importance, k, dim=1).indices)
    steps = torch.arange(1, k + 1)
    return (top.cumsum(1).float() / steps)[:, counts - 1], (bottom.cumsum(1).float() / steps)[:, counts - 1]


def step_counts(n_features: int, steps: int = 50) -> torch.Tensor:
    """Features removed or inserted after each of ``steps`` steps, starting at 0: (steps + 1,). Every step takes
    F // steps features and the first F % steps take one more (the ablation steps of COCOA's code, Lin et al. 2023).

    >>> step_counts(7, 3).tolist()
    [0, 3, 5, 7]
    """
    if steps < 1 or steps > n_features:
        raise InvalidArgument(f"`steps` must be in [1, n_features={n_features}], got {steps}.")
    size, rest = divmod(int(n_features), int(steps))
    sizes = torch.full((steps,), size, dtype=torch.long)
    sizes[:rest] += 1
    return torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])


def contrastive_similarity(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """COCOA's contrastive corpus similarity (Lin et al. 2023) of latents z (..., d): the mean cosine
    similarity to the corpus minus the mean cosine similarity to the foil, i.e. <z / ||z||, target> with
    target = mean of the corpus' unit latents - mean of the foil's (:meth:`lfeval.explain.corpus.FittedCorpus`)."""
    return (F.normalize(z, dim=-1) * target).sum(-1)


def corpus_curves(encoder, x: torch.Tensor, importance: torch.Tensor, fitted, target: str = "similarity",
                  order: str = "deletion", steps: int = 50, baseline=None, chunk_size: int = 512) -> tuple:
    """COCOA's curves ``(values (N, steps + 1), fractions (steps + 1,))``: the target of each explicand x after
    0, ..., F units by ``importance`` (N, F) were deleted (``order="deletion"``) or revealed on the baseline
    (``"insertion"``), for a :class:`~lfeval.explain.corpus.FittedCorpus` of the same encoder. ``target`` is
    ``"similarity"`` (:func:`contrastive_similarity` with the explicand's corpus target) or
    ``"majority_probability"`` (the corpus probe's probability of the explicand's corpus majority class)."""
    n, n_feat = importance.shape
    counts = step_counts(n_feat, steps).to(x.device)
    inputs = perturbed_inputs(encoder, x, ordered_masks(importance, counts, order), baseline)
    with torch.no_grad():
        groups = fitted.groups(encoder(x))
        z = encode_chunks(encoder, inputs, chunk_size).view(n, len(counts), -1)
    if target == "similarity":
        values = contrastive_similarity(z.double(), fitted.targets[groups].unsqueeze(1))
    else:
        probs = fitted.probabilities(z.reshape(n * len(counts), -1)).view(n, len(counts), -1)
        majority = fitted.majority()[groups]
        values = probs.gather(2, majority.view(n, 1, 1).expand(n, len(counts), 1))[..., 0]
    return values.float(), counts.double() / n_feat


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


__all__ = ["DISTANCES", "CORRELATIONS", "ORDERS", "feature_ranks", "mask_counts", "ordered_masks", "perturbed_inputs",
           "encode_chunks", "representation_distance", "unit_importance", "representation_shift_curve",
           "normalised_auc", "similarity_rates", "membership_rates", "step_counts", "contrastive_similarity",
           "corpus_curves", "rowwise_correlation", "pooled_correlation",
           "noisy_linear_imputation"]



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

