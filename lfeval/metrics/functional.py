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

from ..errors import InvalidArgument, InvalidInput
from ..memory import encode_chunks, pass_budget, rows_per_pass  # encode_chunks: re-exported (chunked f(x))
from ..validation import check_finite

DISTANCES = ("squared_l2", "normalised_l2", "cosine")
MASK_COUNTS = ("floor", "round")
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
    try:
        p = torch.as_tensor(fractions, dtype=torch.float64, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgument(f"`fractions` must be numbers in [0, 1], got {fractions!r}.") from None
    if p.ndim > 1 or not bool(((p >= 0) & (p <= 1)).all()):  # NaN fails both comparisons
        raise InvalidArgument(f"`fractions` must be numbers in [0, 1] (shares of the {n_features} features), got "
                              f"{p.tolist()}.")
    p = p * n_features
    if rule == "floor":
        return torch.floor(p + 1e-9).long()
    return torch.clamp(torch.round(p), min=1).long()


def chunk_rows(sample_shape: tuple, device=None, budget: Optional[int] = None) -> int:
    """Inputs per forward pass for inputs of ``sample_shape``: about ``budget`` input values per pass. On the
    CPU, 2**15 per torch thread, so a pass's activations stay in cache (1 thread: 512 8x8 digits or 41 28x28
    images; 2 threads: 1024 or 83); on a GPU, :func:`lfeval.memory.pass_budget` of the device; at most
    :func:`lfeval.memory.rows_per_pass`'s budget."""
    if budget is None:
        on_gpu = torch.device(device or "cpu").type == "cuda"
        budget = pass_budget(device) if on_gpu else 2 ** 15 * torch.get_num_threads()
    numel = max(1, math.prod(sample_shape))
    return rows_per_pass(numel, max(1, budget // numel), device=device)  # never above LFEVAL_PASS_BUDGET either


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
    """The ``(N * K, *shape)`` inputs of masks (N, K, F) over the encoder's masking units (or every entry, when F is
    the number of entries): masked units take the baseline's values."""
    n, k, n_feat = masks.shape
    shape = tuple(x.shape[1:])
    units = shape if n_feat == x[0].numel() else encoder.modality.unit_shape(shape)
    masks = masks.view(n, k, *units)
    base = encoder.baseline_for(x, baseline)
    return torch.where(masks, base.unsqueeze(1), x.unsqueeze(1)).reshape(n * k, *shape)


def representation_distance(z: torch.Tensor, z_masked: torch.Tensor, distance: str = "squared_l2") -> torch.Tensor:
    """Shift between latents (..., d): squared L2 (paper), squared L2 / ||z||^2, or 1 - cosine.

    Raises :class:`~lfeval.errors.InvalidInput` when a shift is NaN/inf: a latent holds NaN/inf (NaN inputs or
    baseline, an encoder that overflows) or the squared distance overflows the latents' dtype (inputs of
    magnitude ~1e20 and more)."""
    if distance == "squared_l2":
        out = (z - z_masked).pow(2).sum(-1)
    elif distance == "normalised_l2":
        out = (z - z_masked).pow(2).sum(-1) / z.pow(2).sum(-1).clamp_min(1e-12)
    elif distance == "cosine":
        out = 1 - F.cosine_similarity(z, z_masked, dim=-1)
    else:
        raise InvalidArgument(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
    if out.numel() and not bool(torch.isfinite(out).all()):
        finite = bool(torch.isfinite(z).all()) and bool(torch.isfinite(z_masked).all())
        why = (f"the squared distance of latents up to |z| = {float(z.abs().max()):.3g} overflows {out.dtype}"
               if finite else "the encoder returned NaN/inf latents")
        raise InvalidInput(f"The {distance} representation shift is NaN/inf: {why}. Pass finite inputs and a "
                           "finite baseline on a moderate scale (e.g. rescale the data to [0, 1]).")
    return out


def unit_importance(encoder, attributions: torch.Tensor, shape: tuple, per_channel: bool = False) -> torch.Tensor:
    """Importance (N, F) of the encoder's masking units (its modality's: pixels summed over channels for
    images), or of every entry with ``per_channel``."""
    if per_channel:
        return attributions.abs().reshape(len(attributions), -1)
    return encoder.modality.unit_importance(attributions, shape)


def fixed_units_last(encoder, x: torch.Tensor, importance: torch.Tensor, baseline=None,
                     order: str = "deletion") -> torch.Tensor:
    """``importance`` (N, F) with the units the baseline leaves unchanged ranked after every other unit in
    ``order``'s sense: -inf (never in a top-M set before the removable units) for deletion and insertion, +inf
    (never among the bottom-M) for LeRF. Only for discrete modalities (text), where such units are structure:
    [CLS], [SEP] and padding, which :class:`lfeval.modalities.text.TokenBaseline` never removes, so masking one is
    a no-op that would waste a step of the count. Continuous inputs are returned as they are (a pixel equal to
    the baseline is still a feature, as in the paper's code)."""
    if encoder.modality.continuous:
        return importance
    shape = tuple(x.shape[1:])
    changed = (encoder.baseline_for(x, baseline) != x).to(importance.dtype)
    per_entry = importance.shape[1] == x[0].numel() and importance.shape[1] != encoder.modality.n_features(shape)
    changed = changed.reshape(len(x), -1) if per_entry else encoder.modality.unit_importance(changed, shape)
    return importance.masked_fill(changed == 0, math.inf if order == "lerf" else -math.inf)


@torch.no_grad()
def representation_shift_curve(encoder, x: torch.Tensor, importance: torch.Tensor, fractions: Sequence[float],
                               baseline=None, distance: str = "squared_l2", chunk_size: Optional[int] = None,
                               mask_count: str = "floor", order: str = "deletion") -> torch.Tensor:
    """Shifts (N, K) of f when the top-M units by ``importance`` (N, F) are replaced with the baseline, for
    M = :func:`mask_counts` of each fraction with rule ``mask_count`` (Crabbé & van der Schaar 2022, §4.1).

    ``order="insertion"`` replaces every unit but the top-M (the insertion twin: the baseline with the most
    important units revealed) and ``order="lerf"`` the bottom-M (least relevant first); see :func:`ordered_masks`.
    Each order replaces a top-c set or its complement, so all use one set of sort keys (:func:`top_masks`).
    On text, the units the baseline keeps ([CLS], [SEP], padding) come last in every order
    (:func:`fixed_units_last`): M counts positions of the padded length L, and masking reaches structure only
    once every removable token is masked.

    Chunk by chunk of samples, the masks are found and each sample's inputs (itself, then masked at each
    fraction) are built and encoded in one pass of about ``chunk_size`` inputs (default: :func:`chunk_rows`;
    never more than :func:`lfeval.memory.rows_per_pass` allows): memory stays bounded by the chunk and f(x)
    shares the passes of its masked copies. A fraction that replaces every unit gives the baseline itself: when
    the baseline is one input shared by the batch (a number or one input's tensor), f(baseline) is encoded once.
    """
    if order not in ORDERS:
        raise InvalidArgument(f"`order` must be one of {ORDERS}, got {order!r}.")
    check_finite(x, "x")
    if importance.ndim != 2 or len(importance) != len(x):
        raise InvalidInput(f"`importance` must be (N, F) = ({len(x)}, n_features), got {tuple(importance.shape)}.")
    if importance.is_floating_point() and bool(torch.isnan(importance).any()):
        raise InvalidInput("`importance` contains NaN, which ranks no feature; recompute the attributions "
                           "(+-inf ranks a feature first or last and is allowed).")
    n, n_feat = importance.shape
    shape = tuple(x.shape[1:])
    counts = mask_counts(fractions, n_feat, mask_count, device=x.device)
    importance = fixed_units_last(encoder, x, importance, baseline, order)
    top = n_feat - counts if order == "lerf" else counts  # the top-c set: replaced (deletion) or kept (else)
    invert = order != "deletion"
    base = encoder.baseline_for(x, baseline)
    shared = n > 1 and base.stride(0) == 0  # one baseline expanded over the batch
    full = ((top == 0) if invert else (top >= n_feat)) & shared  # these levels are f(baseline) for every sample
    none = (top >= n_feat) if invert else (top == 0)  # these levels replace nothing: shift 0, not encoded
    untouched = top.new_full((1,), n_feat if invert else 0)  # level 0: x itself
    levels = torch.cat([untouched, top[~full & ~none]])
    units = shape if n_feat == x[0].numel() else encoder.modality.unit_shape(shape)
    n_levels, encode_base = len(levels), bool(full.any())
    rows = chunk_rows(shape, x.device) if chunk_size is None else rows_per_pass(math.prod(shape), chunk_size,
                                                                                device=x.device)
    step = max(1, rows // n_levels)  # samples per pass
    z, z_base = [], None
    block = step * max(1, 4096 // step)  # keys and thresholds per block of samples, masks per pass
    for i in range(0, n, step):
        if i % block == 0:
            keys, thresholds = _top_keys(importance[i:i + block], levels)
        j = i % block
        masks = (keys[j:j + step, None, :] <= thresholds[j:j + step, :, None]) ^ invert
        masks = masks.view(-1, n_levels, *units)
        inputs = torch.where(masks, base[i:i + step].unsqueeze(1), x[i:i + step].unsqueeze(1))
        inputs = inputs.reshape(-1, *shape)
        if encode_base and i == 0:  # f(baseline) rides along in the first pass
            out = encoder(torch.cat([inputs, base[:1]]))
            z, z_base = [out[:-1]], out[-1:]
        else:
            z.append(encoder(inputs))
    z = torch.cat(z).view(n, n_levels, -1)
    zm = z.new_empty(n, len(counts), z.shape[-1])
    zm[:, ~full & ~none] = z[:, 1:]
    if encode_base:
        zm[:, full] = z_base.unsqueeze(1)
    zm[:, none] = z[:, :1]
    shifts = representation_distance(z[:, :1], zm, distance)
    shifts[:, none] = 0  # exactly (1 - cosine of a latent with itself rounds to ~1e-7)
    return shifts


def normalised_auc(curves: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves (N, K) over x (K,), divided by the x range: (N,)."""
    x = torch.as_tensor(x, dtype=curves.dtype, device=curves.device)
    if x.ndim != 1 or len(x) < 2 or not bool(torch.isfinite(x).all()) or not x[-1] > x[0]:
        raise InvalidArgument(f"`x` must be >= 2 finite points with x[-1] > x[0] (e.g. increasing mask fractions), "
                              f"got {x.tolist()}.")
    if curves.shape[-1] != len(x):
        raise InvalidInput(f"`curves` have {curves.shape[-1]} points per curve but `x` has {len(x)}.")
    check_finite(curves, "curves")
    return torch.trapezoid(curves, x, dim=-1) / (x[-1] - x[0])


def similarity_rates(importance: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor,
                     counts: Sequence[int]) -> tuple:
    """Same-label rate of the top-M and bottom-M training examples of each test example, for each M in
    ``counts`` (paper §4.1, Fig. 3): ``(top (N, K), bottom (N, K))``."""
    device = importance.device  # ranked where the matrix is (a GPU for all of MNIST)
    y = torch.as_tensor(y_test).to(device).reshape(-1, 1)
    y_train = torch.as_tensor(y_train).to(device)
    counts = _check_rates(importance, counts)
    if y_train.shape != importance.shape[1:] or len(y) != len(importance):
        raise InvalidInput(f"`y_train` ({tuple(y_train.shape)}) and `y_test` ({len(y)},) must label the columns and "
                           f"rows of `importance` {tuple(importance.shape)}.")
    k = int(counts.max())
    top = y_train[torch.topk(importance, k, dim=1).indices] == y  # (N, k), most important first
    bottom = y_train[torch.topk(-importance, k, dim=1).indices] == y
    steps = torch.arange(1, k + 1, device=device)
    return (top.cumsum(1).float() / steps)[:, counts - 1], (bottom.cumsum(1).float() / steps)[:, counts - 1]


def membership_rates(importance: torch.Tensor, member: torch.Tensor, counts: Sequence[int]) -> tuple:
    """Share of the top-M and bottom-M training examples by ``importance`` (N, n_train) for which ``member``
    (N, n_train) is True, for each M in ``counts``: ``(top (N, K), bottom (N, K))``. :func:`similarity_rates`
    with ``member = (y_train == y_test)``; the label-free rates use pseudo-labels or latent neighbourhoods."""
    device = importance.device
    counts = _check_rates(importance, counts)
    k = int(counts.max())
    member = torch.as_tensor(member).to(device).bool()
    if member.shape != importance.shape:
        raise InvalidInput(f"`member` must have the shape of `importance` {tuple(importance.shape)}, got "
                           f"{tuple(member.shape)}.")
    top = member.gather(1, torch.topk(importance, k, dim=1).indices)
    bottom = member.gather(1, torch.topk(-importance, k, dim=1).indices)
    steps = torch.arange(1, k + 1, device=device)
    return (top.cumsum(1).float() / steps)[:, counts - 1], (bottom.cumsum(1).float() / steps)[:, counts - 1]


def _check_rates(importance: torch.Tensor, counts) -> torch.Tensor:
    """The counts M as a tensor on the matrix' device, checked: 1 <= M <= n_train, and no NaN importance."""
    if importance.ndim != 2 or 0 in importance.shape:
        raise InvalidInput(f"`importance` must be a non-empty (n_test, n_train) matrix, got {tuple(importance.shape)}.")
    if importance.is_floating_point() and bool(torch.isnan(importance).any()):
        raise InvalidInput("`importance` contains NaN, which ranks no training example; recompute the matrix.")
    counts = torch.as_tensor(counts if torch.is_tensor(counts) else np.atleast_1d(np.asarray(counts)),
                             device=importance.device)
    n_train = importance.shape[1]
    if counts.ndim != 1 or not len(counts) or counts.is_floating_point() or not bool(
            ((counts >= 1) & (counts <= n_train)).all()):
        raise InvalidArgument(f"`counts` must be integers M in [1, n_train={n_train}], got {counts.tolist()}.")
    return counts.long()


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
    target = mean of the corpus' unit latents - mean of the foil's (:meth:`lfeval.explain.corpus.FittedCorpus`).
    Each latent is divided by its largest magnitude before it is normalised, so latents on any scale (1e-30 to
    1e30 in float32) neither underflow nor overflow the norm."""
    check_finite(z.detach(), "z")
    scale = z.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)
    return (F.normalize(z / scale, dim=-1) * target).sum(-1)


def corpus_curves(encoder, x: torch.Tensor, importance: torch.Tensor, fitted, target: str = "similarity",
                  order: str = "deletion", steps: int = 50, baseline=None, chunk_size: int = 512) -> tuple:
    """COCOA's curves ``(values (N, steps + 1), fractions (steps + 1,))``: the target of each explicand x after
    0, ..., F units by ``importance`` (N, F) were deleted (``order="deletion"``) or revealed on the baseline
    (``"insertion"``), for a :class:`~lfeval.explain.corpus.FittedCorpus` of the same encoder. ``target`` is
    ``"similarity"`` (:func:`contrastive_similarity` with the explicand's corpus target) or
    ``"majority_probability"`` (the corpus probe's probability of the explicand's corpus majority class)."""
    n, n_feat = importance.shape
    counts = step_counts(n_feat, steps).to(x.device)
    importance = fixed_units_last(encoder, x, importance, baseline, order)
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
    """Correlation of each row of a with the same row of b: (N, D), (N, D) -> (N,). NaN for a constant row.

    Each centred row is divided by its largest magnitude first, so rows on any scale (1e-30 to 1e30 in float32)
    neither overflow nor underflow; a row is constant when its minimum equals its maximum (no rounding residue of
    the mean is mistaken for a signal)."""
    if a.shape != b.shape:
        raise InvalidInput(f"`a` and `b` must have the same shape (N, D), got {tuple(a.shape)} and {tuple(b.shape)}.")
    check_finite(a, "a")
    check_finite(b, "b")
    if kind == "spearman":
        a, b = _ranks(a), _ranks(b)
    elif kind != "pearson":
        raise InvalidArgument(f"`kind` must be one of {CORRELATIONS}, got {kind!r}.")
    constant = (a.amax(-1) == a.amin(-1)) | (b.amax(-1) == b.amin(-1)) if a.shape[-1] else torch.ones(
        a.shape[:-1], dtype=torch.bool, device=a.device)
    a, b = _unit_rows(a), _unit_rows(b)
    corr = ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)).clamp(-1, 1)
    return torch.where(constant, torch.full_like(corr, float("nan")), corr)


def _unit_rows(v: torch.Tensor) -> torch.Tensor:
    """Rows centred on their mean and divided by their largest magnitude (0 for a constant row)."""
    v = v - v.mean(-1, keepdim=True)
    return v / v.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def pooled_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of all entries of a and b (the paper pools over all test pixels / the matrix)."""
    return float(rowwise_correlation(a.reshape(1, -1).double(), b.reshape(1, -1).double())[0])


__all__ = ["DISTANCES", "MASK_COUNTS", "CORRELATIONS", "ORDERS", "feature_ranks", "top_masks", "mask_counts",
           "chunk_rows", "ordered_masks", "perturbed_inputs", "encode_chunks", "representation_distance",
           "unit_importance", "fixed_units_last", "representation_shift_curve", "normalised_auc", "similarity_rates",
           "membership_rates",
           "step_counts", "contrastive_similarity", "corpus_curves", "rowwise_correlation", "pooled_correlation",
           "noisy_linear_imputation"]


def _neighbour_sum(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k v[s + k] over the unit axes of v ``(B, 1, *S)``, zero outside the sample (conv with padding)."""
    pad = tuple(k // 2 for k in kernel.shape)
    conv = torch.nn.functional.conv2d if kernel.ndim == 2 else torch.nn.functional.conv1d
    return conv(v, kernel.view(1, 1, *kernel.shape), padding=pad)


def noisy_linear_imputation(x: torch.Tensor, mask: torch.Tensor, kernel, noise: float = 0.01, baseline=None,
                            generator=None, tol: float = 1e-7, max_iter: int = 2000) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022), batched in torch.

    Every removed value (``mask`` True, shape broadcastable to ``x`` ``(N, C, *S)`` with the unit axes S last)
    becomes the weighted mean of its in-bounds neighbours under ``kernel`` (the modality's: 1/6 for the 4
    direct and 1/12 for the 4 diagonal neighbours of a pixel; 1/2 for the two neighbours of a time step),
    removed neighbours included: one sparse linear system per sample and channel, solved jointly by conjugate
    gradients (float64). N(0, noise²) is then added to the imputed values. With ``kernel=None`` (tabular
    rows: no neighbours) removed values take ``baseline`` plus the noise.
    """
    check_finite(x, "x")
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

