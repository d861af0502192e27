"""ROAD, label-free (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
ICML 2022), for images of any channel count, time series and tabular rows.

ROAD removes the p% most (MoRF) or least (LeRF) relevant features and fills them by noisy linear
imputation (:func:`lfeval.metrics.functional.noisy_linear_imputation`), so the removal itself does not
leak the mask's shape to the model. A classifier's accuracy is tracked; an encoder has no class, so for
each sample lfeval tracks how far f(x') moves from f(x):

* ``measure="shift"`` (default): ||f(x) - f(x')||² / ||f(x)||², the relative representation shift
  (continuous, and independent of the batch and of the latents' scale);
* ``measure="cosine"``: cos(f(x), f(x')) (insensitive when latents share a large common offset);
* ``measure="retrieval"``: 1 if f(x') is still nearer (squared L2) to f(x) than to the representation of
  any other sample of the batch, else 0: the label-free "prediction unchanged" that
  ``lfeval.metrics.LabelFree(quantus.ROAD())`` computes, here per sample and for every modality.

The per-sample score is the normalised area of that curve over the percentages. With MoRF a faithful
attribution moves the representation fast: a high shift, a low similarity; with LeRF the opposite.
Quantus 0.6.0's ROAD ranks C*H*W entries but imputes on an H*W pixel grid and fails on RGB; here the
masking unit is the modality's (a pixel in every channel, a time step in every channel, a feature).

>>> import numpy as np, torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
>>> x = np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32)
>>> road = ROAD(percentages=(25, 50, 75), noise=0.0)
>>> scores = road(net, x, a_batch=x)
>>> len(scores), road.curve().series["shift"].shape, road.score_direction.value
(6, (6, 3), 'higher')
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import quantus
import torch
import torch.nn.functional as F

from ..errors import InvalidArgument
from ..validation import as_tensor, check_choice, check_number, check_positive_int
from .base import Curve, LabelFreeMetric
from .catalogue import CurveSpec, register_metric
from .functional import (
    encode_chunks,
    feature_ranks,
    noisy_linear_imputation,
    normalised_auc,
    representation_distance,
    unit_importance,
)

_DT = quantus.helpers.enums.DataType
#: ROAD's removal orders: most relevant first, least relevant first
ROAD_ORDERS = ("morf", "lerf")
MEASURES = ("shift", "cosine", "retrieval")


@register_metric(defaults=lambda ctx: {"percentages": [10, 30, 50, 70, 90], "seed": ctx.seed}, text=(
    "Label-free ROAD (Rong et al. 2022): the most relevant features are removed by noisy linear imputation "
    "(no mask shape leaks to the encoder) and the relative shift ||f(x) - f(x')||² / ||f(x)||² is tracked; "
    "the score is the normalised area of that curve over the removed percentages."), curve=CurveSpec(
    "ROAD: relative representation shift as the top features are imputed (mean, 95% band)",
    "% of features imputed (most relevant first)", "||f(x) - f(x')||² / ||f(x)||²",
    "A faithful attribution moves the representation fastest (high curves)."))
class ROAD(LabelFreeMetric):
    """Label-free ROAD: how far f(x') moves from f(x) as the top (MoRF) or bottom (LeRF) features are imputed.

    Parameters
    ----------
    percentages : sequence of numbers in (0, 100)
        Shares of the masking units removed (Quantus' default 10, 20, ..., 90); k = int(p / 100 * F).
    order : {"morf", "lerf"}
        Most relevant first or least relevant first (the score direction follows the order and the measure:
        MoRF shift, higher is better; MoRF similarity, lower; LeRF the reverse).
    noise : float
        Standard deviation of the imputation noise (Rong et al.: 0.01 for inputs in [0, 1]).
    measure : {"shift", "cosine", "retrieval"}
        What is tracked (see the module docstring).
    seed : int
        Seed of the imputation noise.
    chunk_size : int
        Imputed inputs encoded per forward pass.
    """

    name = "ROAD"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
    requires_continuous = True  # imputes removed values from their neighbours: token ids have none

    def __init__(self, percentages=tuple(range(10, 100, 10)), order: str = "morf", noise: float = 0.01,
                 measure: str = "shift", seed: int = 0, chunk_size: int = 512, abs: bool = True,
                 normalise: bool = False, normalise_func: Optional[Callable] = None, normalise_func_kwargs=None,
                 return_aggregate: bool = False, aggregate_func: Optional[Callable] = None,
                 default_plot_func: Optional[Callable] = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        try:
            p = np.asarray(percentages, dtype=float)
        except (TypeError, ValueError):
            p = np.zeros(0)
        if p.ndim != 1 or len(p) < 2 or np.any(p <= 0) or np.any(p >= 100) or np.any(np.diff(p) <= 0):
            raise InvalidArgument(f"`percentages` must be >= 2 increasing values in (0, 100), got {percentages!r}.")
        self.percentages = p
        self.order = check_choice(order, ROAD_ORDERS, "ROAD order")
        self.measure = check_choice(measure, MEASURES, "ROAD measure")
        self.noise = check_number(noise, "noise")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        moves_first = (self.order == "morf") == (self.measure == "shift")  # the curve should rise first
        direction = "higher" if moves_first else "lower"
        self.score_direction = quantus.helpers.enums.ScoreDirection(direction)
        self.curves, self._parts = None, []

    def custom_preprocess(self, **kwargs):
        self._parts = []
        self._generator = torch.Generator().manual_seed(self.seed)

    @torch.no_grad()
    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        encoder = self.torch_model(model)
        device = encoder.device
        x = as_tensor(x_batch, "x_batch", device=device)
        n, shape, modality = len(x), tuple(x.shape[1:]), encoder.modality
        if self.measure == "retrieval" and n < 2:
            raise InvalidArgument("ROAD(measure='retrieval') compares each sample with the others of its batch: "
                                  "pass at least 2 samples (and batch_size >= 2).")
        imp = unit_importance(encoder, as_tensor(a_batch, "a_batch", device=device), shape)
        if self.order == "lerf":
            imp = -imp
        ranks = feature_ranks(imp)  # (N, F), 0 = removed first
        k = torch.as_tensor((self.percentages / 100 * imp.shape[1]).astype(int), device=device)
        masks = (ranks[:, None, :] < k[None, :, None]).view(n, len(k), *modality.unit_shape(shape))
        z = encoder(x)
        base = encoder.baseline_for(x) if modality.imputation_kernel() is None else None
        curves = []
        for j in range(len(k)):  # a few percentages, each a batched imputation of every sample
            xj = noisy_linear_imputation(x, masks[:, j], modality.imputation_kernel(), self.noise, base,
                                         self._generator)
            zj = encode_chunks(encoder, xj, self.chunk_size)
            if self.measure == "shift":
                curves.append(representation_distance(z, zj, "normalised_l2"))
            elif self.measure == "cosine":
                curves.append(F.cosine_similarity(z, zj, dim=1))
            else:
                curves.append((torch.cdist(zj, z).argmin(1) == torch.arange(n, device=device)).to(z.dtype))
        curves = torch.stack(curves, 1)
        self._parts.append(curves.cpu().numpy())
        return normalised_auc(curves, torch.as_tensor(self.percentages)).cpu().numpy()

    def custom_postprocess(self, **kwargs):
        self.curves = np.concatenate(self._parts) if self._parts else None

    def curve(self) -> Curve:
        """The last call's per-sample curves over the % of features imputed."""
        label = {"shift": "shift", "cosine": "similarity", "retrieval": "retrieved"}[self.measure]
        return Curve(x=self.percentages, series={label: self.curves})


__all__ = ["ROAD", "ROAD_ORDERS", "MEASURES"]
