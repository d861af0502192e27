"""A user metric in one file, declared by its class: ``@register_metric`` puts it in the catalogue that ``lfeval run``
scores with (no lfeval file is edited, no entry is written elsewhere).

Concentration(k) is the share of the total |attribution| that the k most important masking units hold, per
sample (higher = more concentrated); a run's default k is an eighth of the input's units.
"""

import quantus
import torch

from lfeval.metrics import LabelFreeMetric, register_metric


@register_metric(text="Share of the total |attribution| held by the top eighth of the features (a user metric "
                      "declared by its class in tests/extensions).",
                 defaults=lambda ctx: {"k": max(1, ctx.n_features // 8)})
class Concentration(LabelFreeMetric):
    name = "Concentration"
    data_applicability = {quantus.helpers.enums.DataType.IMAGE, quantus.helpers.enums.DataType.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.COMPLEXITY

    def __init__(self, k: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs):
        encoder = self.torch_model(model)
        imp = encoder.modality.unit_importance(torch.as_tensor(a_batch).abs(), tuple(x_batch.shape[1:]))
        top = imp.topk(min(self.k, imp.shape[1]), dim=1).values.sum(1)
        return (top / imp.sum(1).clamp_min(1e-12)).numpy()
