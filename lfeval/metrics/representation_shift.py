"""RepresentationShift: label-free feature consistency (Crabbé & van der Schaar 2022, §4.1).

For each sample, the M most important features (by |attribution|, summed over channels as in
the paper) are replaced with the baseline, for M = 5, 10, 20, 50, 80 and 100% of the features
(M = floor(p * d) by default, as the paper's code), and the representation shift
s(M) = ||f(x) - f(x_M)||^2 is measured. A faithful attribution moves the representation most when
its top features are masked: the per-sample score is the normalised area under s(M),

    AUC = (1 / (p_K - p_1)) * trapz(s(p_k), p_k),   p_k the mask fractions,

higher is better. All samples x fractions are masked with one rank + comparison in torch and
encoded in cache-sized forward passes.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import numpy as np
import quantus
import torch

from ..errors import InvalidArgument
from ..explain.stochastic import random_attribution
from ..validation import as_tensor, check_choice, check_positive_int
from .base import Curve, LabelFreeMetric
from .catalogue import CurveSpec, register_metric
from .functional import DISTANCES, MASK_COUNTS, mask_counts, normalised_auc, representation_shift_curve, unit_importance

_DT = quantus.helpers.enums.DataType


@register_metric(default=True, meta_default=True, defaults=lambda ctx: {"seed": ctx.seed}, text=(
    "Label-free feature consistency (paper §4.1): mask the top-M features by |attribution| with the "
    "baseline and measure ||f(x) - f(x_M)||²; the score is the normalised area under that curve over "
    "the mask fractions."), curve=CurveSpec(
    "Representation shift when the top features are masked (mean, 95% band)",
    "% of features masked (most important first)", "representation shift",
    "The paper's Fig. 2: a faithful method moves the representation most when its top features are "
    "masked, far above Random."))
class RepresentationShift(LabelFreeMetric):
    """Shift of the representation when the top-M features by attribution are masked (paper §4.1).

    Parameters
    ----------
    fractions : sequence of float in (0, 1]
        Fractions p of the d features (masking units) masked.
    mask_count : {"floor", "round"}
        How many features a fraction masks. ``"floor"`` (default): M = floor(p * d), as the paper's
        experiments (§4.1; lfxai 0.1.1 computes ``mask_size = int(pert_percentage * W**2 / 100)`` and
        masks the ``torch.topk`` pixels in ``lfxai.utils.feature_attribution.generate_masks``): 12 of the
        64 pixels of an 8x8 digit at 20%, 156 of 784 on MNIST. ``"round"``: M = round(p * d), at least
        1 (13 and 157). With ``"floor"``, a fraction p < 1/d masks nothing: its shift is 0, as in the
        paper's code, and the call warns (use larger fractions or ``"round"``). Equal attributions are
        ranked by feature index (lfxai's ``torch.topk`` leaves their order unspecified).
    baseline : number, tensor, callable or None
        Replacement of masked features. None = the encoder's baseline (the data set's: zeros for
        digits/MNIST, mean beat for ECG5000, Gaussian blur for CIFAR-10; zeros for a plain module).
    distance : {"squared_l2", "normalised_l2", "cosine"}
        The paper's ||f(x) - f(x_M)||^2, the same divided by ||f(x)||^2, or cosine distance.
    per_channel : bool
        Rank every entry separately instead of the modality's masking unit (a pixel in all channels).
    relative : bool
        Report AUC(attribution) - mean AUC of ``n_random`` random rankings of the same sample
        (the paper's comparison with random masks); > 0 means better than random.
    n_random : int
        Random rankings per sample when ``relative``.
    seed : int
        Seed of the random rankings.
    chunk_size : int or None
        Inputs per forward pass; it bounds the memory. None: about 32k input values per torch thread on the
        CPU (with 2 threads about 1000 8x8 digits or 80 28x28 images, in whole samples), which keeps a pass in
        cache (:func:`lfeval.metrics.functional.chunk_rows`). Quantus' ``batch_size`` then only sets how many
        samples ``explain_func`` explains at a time: a precomputed ``a_batch`` is scored in one call. When
        the baseline is shared by all samples, the 100% mask is f(baseline), encoded once.

    Attributes
    ----------
    curves : np.ndarray (N, K)
        The shift curves of the last call; ``all_curves`` keeps every call's.
    random_curves : np.ndarray (N, K) or None
        The mean random-ranking curves of the last call (``relative=True``).

    >>> import torch, lfeval
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False)).eval()
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1., 0, 0, 0], [0, 0, 0, 0]]))   # f reads feature 0 only
    >>> x = torch.ones(1, 1, 4).numpy()
    >>> oracle = torch.tensor([[[1., 0, 0, 0]]]).numpy()                           # rank feature 0 first
    >>> [float(s) for s in RepresentationShift(fractions=(0.25, 1.0))(net, x, a_batch=oracle)]  # shift 1 at once
    [1.0]
    """

    name = "RepresentationShift"
    #: which units are replaced at each fraction (:func:`lfeval.metrics.functional.ordered_masks`)
    order = "deletion"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
    chunked = True  # memory is bounded by chunk_size; batch_size only batches explain_func

    def __init__(self, fractions=(0.05, 0.1, 0.2, 0.5, 0.8, 1.0), baseline=None, distance: str = "squared_l2",
                 mask_count: str = "floor", per_channel: bool = False, relative: bool = False, n_random: int = 1,
                 seed: int = 0, chunk_size: Optional[int] = None, abs: bool = True, normalise: bool = False,
                 normalise_func: Optional[Callable] = None, normalise_func_kwargs=None, return_aggregate: bool = False,
                 aggregate_func: Optional[Callable] = None, default_plot_func: Optional[Callable] = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        try:
            fr = np.asarray(fractions, dtype=float)
        except (TypeError, ValueError):
            raise InvalidArgument(f"`fractions` must be numbers in (0, 1], got {fractions!r}.") from None
        if fr.ndim != 1 or len(fr) < 2 or np.any(fr <= 0) or np.any(fr > 1) or np.any(np.diff(fr) <= 0):
            raise InvalidArgument(
                f"`fractions` must be >= 2 increasing values in (0, 1], got {list(fractions)}."
            )
        if distance not in DISTANCES:
            raise InvalidArgument(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
        self.mask_count = check_choice(mask_count, MASK_COUNTS, "mask_count")
        self.fractions, self.baseline, self.distance = fr, baseline, distance
        self.per_channel, self.relative = bool(per_channel), bool(relative)
        self.n_random = check_positive_int(n_random, "n_random")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        self.curves, self.random_curves, self.all_curves = None, None, []
        self._batch_curves, self._batch_random = [], []

    # ------------------------------------------------------------------ the computation
    def shift_curves(self, encoder, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Shifts (N, K) for masks of the top-M units of attributions ``a`` at each fraction."""
        imp = unit_importance(encoder, a, tuple(x.shape[1:]), self.per_channel)
        return representation_shift_curve(encoder, x, imp, self.fractions, self.baseline, self.distance,
                                          self.chunk_size, self.mask_count, self.order)

    def auc(self, curves: torch.Tensor) -> torch.Tensor:
        """Normalised trapezoid area over the fractions: (N, K) -> (N,)."""
        return normalised_auc(curves, torch.as_tensor(self.fractions))

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        encoder = self.torch_model(model)
        device = encoder.device
        x = as_tensor(x_batch, "x_batch", device=device)
        curves = self.shift_curves(encoder, x, as_tensor(a_batch, "a_batch", device=device))
        scores = self.auc(curves)
        self._batch_curves.append(curves.cpu().numpy())
        if self.relative:
            rand = torch.stack([self.shift_curves(encoder, x, random_attribution(x, seed=self.seed + r))
                                for r in range(self.n_random)]).mean(0)
            self._batch_random.append(rand.cpu().numpy())
            scores = scores - self.auc(rand)
        return scores.cpu().numpy()

    def custom_preprocess(self, model=None, x_batch=None, **kwargs):
        self._batch_curves, self._batch_random = [], []
        if x_batch is not None and self.mask_count == "floor":
            shape = tuple(x_batch.shape[1:])
            d = math.prod(shape) if self.per_channel else self.torch_model(model).modality.n_features(shape)
            empty = [float(p) for p, m in zip(self.fractions, mask_counts(self.fractions, d)) if m == 0]
            if empty:
                warnings.warn(f"RepresentationShift: fraction(s) {empty} of {d} features mask floor(p * d) = 0 "
                              "features (the paper's rule), so their shift is 0; use fractions >= 1/d or "
                              "mask_count='round' (at least 1 feature).")

    def custom_postprocess(self, **kwargs):
        self.curves = np.concatenate(self._batch_curves) if self._batch_curves else None
        self.random_curves = np.concatenate(self._batch_random) if self._batch_random else None
        if self.curves is not None:
            self.all_curves.append(self.curves)

    def curve(self) -> Curve:
        """The last call's shift curves over the % of features masked (paper Fig. 2)."""
        return Curve(x=self.fractions * 100, series={"shift": self.curves})
