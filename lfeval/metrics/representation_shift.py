"""RepresentationShift: label-free feature consistency (Crabbé & van der Schaar 2022, §4.1).

For each sample, the M most important features (by |attribution|, summed over channels as in
the paper) are replaced with the baseline, for M = 5, 10, 20, 50, 80 and 100% of the features,
and the representation shift s(M) = ||f(x) - f(x_M)||^2 is measured. A faithful attribution
moves the representation most when its top features are masked: the per-sample score is the
normalised area under s(M),

    AUC = (1 / (p_K - p_1)) * trapz(s(p_k), p_k),   p_k the mask fractions,

higher is better. All samples x fractions are masked with one top-k rank + comparison in torch
and encoded in a few large forward passes.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import quantus
import torch
import torch.nn.functional as F

from .._validation import as_tensor, model_device
from ..errors import InvalidArgument
from ..explain.features import resolve_baseline
from ..explain.stochastic import random_attribution
from .base import LabelFreeMetric

_DT = quantus.helpers.enums.DataType
DISTANCES = ("squared_l2", "normalised_l2", "cosine")


def feature_ranks(importance: torch.Tensor) -> torch.Tensor:
    """Rank of each feature per sample, 0 = most important. ``importance``: (N, F) -> (N, F) int64."""
    order = torch.argsort(importance, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def representation_distance(z: torch.Tensor, z_masked: torch.Tensor, distance: str) -> torch.Tensor:
    """Shift between latents (..., d): squared L2 (paper), squared L2 / ||z||^2, or 1 - cosine."""
    if distance == "squared_l2":
        return (z - z_masked).pow(2).sum(-1)
    if distance == "normalised_l2":
        return (z - z_masked).pow(2).sum(-1) / z.pow(2).sum(-1).clamp_min(1e-12)
    return 1 - F.cosine_similarity(z, z_masked, dim=-1)


class RepresentationShift(LabelFreeMetric):
    """Shift of the representation when the top-M features by attribution are masked (paper §4.1).

    Parameters
    ----------
    fractions : sequence of float in (0, 1]
        Fractions of features masked; M = round(p * n_features), at least 1.
    baseline : number, tensor, callable or None
        Replacement of masked features. None = the data set's baseline carried by the encoder
        (zeros for digits/MNIST, mean beat for ECG5000, Gaussian blur for CIFAR-10), else 0.
    distance : {"squared_l2", "normalised_l2", "cosine"}
        The paper's ||f(x) - f(x_M)||^2, the same divided by ||f(x)||^2, or cosine distance.
    per_channel : bool
        Rank each channel of each pixel separately instead of summing |a| over channels.
    relative : bool
        Report AUC(attribution) - mean AUC of ``n_random`` random rankings of the same sample
        (the paper's comparison with random masks); > 0 means better than random.
    n_random : int
        Random rankings per sample when ``relative``.
    seed : int
        Seed of the random rankings.
    chunk_size : int
        Masked inputs per forward pass.

    Attributes
    ----------
    curves : np.ndarray (N, K)
        The shift curves of the last call; ``all_curves`` keeps every call's.
    random_curves : np.ndarray (N, K) or None
        The mean random-ranking curves of the last call (``relative=True``).
    """

    name = "Representation Shift"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS

    def __init__(self, fractions=(0.05, 0.1, 0.2, 0.5, 0.8, 1.0), baseline=None, distance: str = "squared_l2",
                 per_channel: bool = False, relative: bool = False, n_random: int = 1, seed: int = 0,
                 chunk_size: int = 512, abs: bool = True, normalise: bool = False,
                 normalise_func: Optional[Callable] = None, normalise_func_kwargs=None, return_aggregate: bool = False,
                 aggregate_func: Optional[Callable] = None, default_plot_func: Optional[Callable] = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        fr = np.asarray(fractions, dtype=float)
        if fr.ndim != 1 or len(fr) < 2 or np.any(fr <= 0) or np.any(fr > 1) or np.any(np.diff(fr) <= 0):
            raise InvalidArgument(
                f"`fractions` must be >= 2 increasing values in (0, 1], got {list(fractions)}."
            )
        if distance not in DISTANCES:
            raise InvalidArgument(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
        if int(n_random) < 1 or int(chunk_size) < 1:
            raise InvalidArgument("`n_random` and `chunk_size` must be >= 1.")
        self.fractions, self.baseline, self.distance = fr, baseline, distance
        self.per_channel, self.relative, self.n_random = bool(per_channel), bool(relative), int(n_random)
        self.seed, self.chunk_size = int(seed), int(chunk_size)
        self.curves, self.random_curves, self.all_curves = None, None, []
        self._batch_curves, self._batch_random = [], []

    # ------------------------------------------------------------------ the computation
    def importance(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Per-feature importance (N, F). For images (N, C, H, W) the paper sums |a| over channels
        (F = H*W, a pixel is masked in every channel) unless ``per_channel``; attributions already
        reduced to one channel are used as they are. Otherwise every entry is a feature."""
        a = a.abs()
        if x.ndim == 4 and a.shape == x.shape and not self.per_channel:
            a = a.sum(1)
        return a.reshape(len(a), -1)

    def shift_curves(self, net: torch.nn.Module, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
        """Shifts (N, K) for masks of the top-M features at each fraction, in batched forward passes."""
        n, n_feat = importance.shape
        ranks = feature_ranks(importance)
        m = torch.clamp(torch.round(torch.as_tensor(self.fractions, device=x.device) * n_feat), min=1).long()
        masks = ranks[:, None, :] < m[None, :, None]  # (N, K, F)
        shape = x.shape[1:] if n_feat == x[0].numel() else (1, *x.shape[2:])  # (1, H, W): shared by channels
        masks = masks.view(n, len(m), *shape)
        base = resolve_baseline(net, x, self.baseline)
        with torch.no_grad():
            z = net(x)
            masked = torch.where(masks, base.unsqueeze(1), x.unsqueeze(1)).reshape(n * len(m), *x.shape[1:])
            zm = torch.cat([net(masked[i:i + self.chunk_size]) for i in range(0, len(masked), self.chunk_size)])
        return representation_distance(z.unsqueeze(1), zm.view(n, len(m), -1), self.distance)

    def auc(self, curves: torch.Tensor) -> torch.Tensor:
        """Normalised trapezoid area over the fractions: (N, K) -> (N,)."""
        fr = torch.as_tensor(self.fractions, dtype=curves.dtype, device=curves.device)
        return torch.trapezoid(curves, fr, dim=-1) / (fr[-1] - fr[0])

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        net = self.torch_model(model)
        device = model_device(net)
        x = as_tensor(x_batch, "x_batch", device=device)
        imp = self.importance(x, as_tensor(a_batch, "a_batch", device=device))
        curves = self.shift_curves(net, x, imp)
        scores = self.auc(curves)
        self._batch_curves.append(curves.cpu().numpy())
        if self.relative:
            rand = torch.stack([
                self.shift_curves(net, x, self.importance(x, random_attribution(x, seed=self.seed + r)))
                for r in range(self.n_random)
            ]).mean(0)
            self._batch_random.append(rand.cpu().numpy())
            scores = scores - self.auc(rand)
        return scores.cpu().numpy()

    def custom_preprocess(self, **kwargs):
        self._batch_curves, self._batch_random = [], []

    def custom_postprocess(self, **kwargs):
        self.curves = np.concatenate(self._batch_curves) if self._batch_curves else None
        self.random_curves = np.concatenate(self._batch_random) if self._batch_random else None
        if self.curves is not None:
            self.all_curves.append(self.curves)
