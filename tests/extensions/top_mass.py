"""A user metric in one file: a class and its catalogue entry (no lfeval file is edited).

TopMass(p) is the share of the total |attribution| that the top p% masking units hold, per sample: a
concentration curve over p whose normalised area is the score (higher = more concentrated).
"""

import numpy as np
import quantus
import torch

from lfeval.metrics import Curve, CurveSpec, LabelFreeMetric, MetricEntry, register_metric
from lfeval.metrics.functional import normalised_auc


class TopMass(LabelFreeMetric):
    name = "TopMass"
    data_applicability = {quantus.helpers.enums.DataType.IMAGE, quantus.helpers.enums.DataType.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.COMPLEXITY

    def __init__(self, percentages=(5, 10, 25, 50, 100), **kwargs):
        super().__init__(**kwargs)
        self.percentages = np.asarray(percentages, dtype=float)
        self.curves = None

    def custom_preprocess(self, **kwargs):
        self._parts = []

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs):
        encoder = self.torch_model(model)
        imp = encoder.modality.unit_importance(torch.as_tensor(a_batch), tuple(x_batch.shape[1:]))
        ordered = imp.sort(dim=1, descending=True).values.cumsum(1)
        k = np.maximum(1, np.round(self.percentages / 100 * imp.shape[1]).astype(int)) - 1
        curves = ordered[:, k] / ordered[:, -1:].clamp_min(1e-12)
        self._parts.append(curves.numpy())
        return normalised_auc(curves, torch.as_tensor(self.percentages)).numpy()

    def custom_postprocess(self, **kwargs):
        self.curves = np.concatenate(self._parts)

    def curve(self):
        return Curve(self.percentages, {"mass": self.curves})


register_metric(MetricEntry(
    "TopMass", build=lambda ctx, kind, params: TopMass(**params), target=TopMass,
    text="Share of the total |attribution| held by the top p% features (a user metric from tests/extensions).",
    curve=CurveSpec("Attribution mass in the top features", "% of features (most important first)",
                    "share of |attribution|", "Concentration curves of the user metric TopMass.", ylim=(0, 1))))
