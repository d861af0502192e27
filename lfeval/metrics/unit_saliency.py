"""Correlation of the saliency maps of an encoder's latent units (Crabbé & van der Schaar 2022, §4.3).

For a disentangled representation one expects each unit to be explained by different features. The
paper measures, per example, the Pearson correlation between the saliency maps ``|a_j(x)|`` of the d
units (:func:`lfeval.explain_units`) and averages the off-diagonal entries; it finds that it does
not fall as β grows. Like the paper's code it also reports the entropy of the saliency mass over
units and the number of units that carry saliency.
"""

from __future__ import annotations

import numpy as np
import quantus
import torch

from ..errors import InvalidArgument, InvalidInput
from ..explain.features import CAPTUM_METHODS, OWN_METHODS, explain_units
from ..validation import check_choice
from .base import LabelFreeMetric


def _checked_units(units) -> torch.Tensor:
    """``|units|`` as float64, (N, d >= 2, features...), finite; else an lfeval error."""
    a = torch.as_tensor(np.asarray(units) if not torch.is_tensor(units) else units)
    if a.dim() < 3:
        raise InvalidArgument(f"`units` must be unit attributions (N, d, *input_shape) from lfeval.explain_units, "
                              f"got shape {tuple(a.shape)}.")
    if a.shape[1] < 2:
        raise InvalidArgument(f"UnitSaliencyCorrelation needs a latent space of >= 2 units, got {a.shape[1]}.")
    a = a.double().abs()
    if not bool(torch.isfinite(a).all()):
        raise InvalidInput("The unit attributions hold NaN or inf (a NaN input or an overflowing encoder); check the "
                           "inputs and the encoder's outputs.")
    return a


def unit_saliency_stats(units: torch.Tensor, active_share: float = 0.01) -> dict:
    """Per-example statistics of unit attributions ``units`` (N, d, ...).

    Returns ``{"correlation", "entropy", "active_units"}``, each (N,):
    mean off-diagonal Pearson correlation of the ``|maps|`` (units with a constant map are left out;
    NaN if fewer than two remain); entropy of p_j = sum|a_j| / sum|a| (nats); number of units with
    p_j >= ``active_share``.
    """
    a = _checked_units(units).flatten(2)  # (N, d, D)
    n, d = a.shape[:2]
    c = a - a.mean(-1, keepdim=True)
    norm = c.norm(dim=-1)  # (N, d)
    valid = norm > 0
    corr = (c @ c.transpose(1, 2)) / (norm.unsqueeze(2) * norm.unsqueeze(1)).clamp_min(1e-300)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & ~torch.eye(d, dtype=torch.bool).unsqueeze(0)
    count = pair.sum((1, 2))
    mean_corr = torch.where(count > 0, (corr * pair).sum((1, 2)) / count.clamp_min(1), torch.nan)
    mass = a.sum(-1)
    p = mass / mass.sum(1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return {"correlation": mean_corr.float().numpy(), "entropy": entropy.float().numpy(),
            "active_units": (p >= active_share).sum(1).numpy()}


def pooled_unit_correlation(units, latents=None) -> float:
    """The paper code's §4.3 number: mean off-diagonal Pearson correlation between the units' saliency maps, each
    pooled over all examples and features (lfxai's ``pearson_saliency`` of ``attribute_individual_dim``).

    ``units`` (N, d, ...) from :func:`lfeval.explain_units`; with ``latents`` (N, d) the saliency is
    ``|z_j(x) a_j(x)|``, as the paper's code weights it, else ``|a_j(x)|``. The per-example correlation of
    :func:`unit_saliency_stats` ignores that weight (a scale per example and unit); pooling does not, and it also
    counts where on the input each unit looks across examples. NaN when a unit's pooled map is constant.

    >>> import torch
    >>> a = torch.tensor([[[1., 2., 3.], [2., 4., 6.]], [[0., 1., 0.], [0., 2., 0.]]])  # unit 1 = 2 x unit 0
    >>> round(pooled_unit_correlation(a), 6)
    1.0
    """
    a = _checked_units(units)
    if latents is not None:
        z = torch.as_tensor(np.asarray(latents) if not torch.is_tensor(latents) else latents).double().abs()
        if tuple(z.shape) != tuple(a.shape[:2]):
            raise InvalidArgument(f"`latents` must be (N, d) = {tuple(a.shape[:2])}, got {tuple(z.shape)}.")
        if not bool(torch.isfinite(z).all()):
            raise InvalidInput("`latents` hold NaN or inf; check the encoder's outputs on these inputs.")
        a = a * z.reshape(*z.shape, *[1] * (a.dim() - 2))
    corr = torch.corrcoef(a.transpose(0, 1).reshape(a.shape[1], -1))
    d = corr.shape[0]
    return float((corr.sum() - corr.diagonal().sum()) / (d * (d - 1)))


class UnitSaliencyCorrelation(LabelFreeMetric):
    """Per example: mean off-diagonal Pearson correlation between the latent units' saliency maps.

    Parameters
    ----------
    method : str
        Feature attribution method for :func:`lfeval.explain_units` (default "GradientShap", the paper's).
    active_share : float
        A unit is active when it carries at least this share of the example's saliency mass.
    **explain_kwargs
        Passed to ``explain_units`` (``baseline``, ``n_samples``, ``seed``, ...).

    ``a_batch`` is not used: the metric explains every unit itself. After a call, ``entropy`` and
    ``active_units`` hold the other two per-example statistics. Lower correlation means the units
    are explained by more distinct features.
    """

    name = "UnitSaliencyCorrelation"
    data_applicability = {quantus.helpers.enums.DataType.IMAGE, quantus.helpers.enums.DataType.TIMESERIES,
                          quantus.helpers.enums.DataType.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.LOWER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.COMPLEXITY

    def __init__(self, method: str = "GradientShap", active_share: float = 0.01, explain_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.method = check_choice(method, tuple(CAPTUM_METHODS) + OWN_METHODS, "explanation method")
        if not 0 < active_share < 1:
            raise InvalidArgument(f"`active_share` must be in (0, 1), got {active_share}.")
        self.active_share = float(active_share)
        self.explain_kwargs = dict(explain_kwargs or {})
        self.entropy, self.active_units = np.zeros(0), np.zeros(0, dtype=int)

    def __call__(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs):
        kwargs.setdefault("explain_func", lambda **kw: None)  # the units are explained in evaluate_batch
        return super().__call__(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=None, s_batch=s_batch,
                                **kwargs)

    def general_preprocess(self, model, x_batch, y_batch, a_batch, s_batch, channel_first, explain_func,
                           explain_func_kwargs, model_predict_kwargs, softmax, device, custom_batch):
        self._stats = []
        return {"model": model, "x_batch": x_batch, "y_batch": y_batch, "a_batch": None, "s_batch": s_batch}

    def batch_preprocess(self, data_batch: dict) -> dict:
        return data_batch

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        units = explain_units(self.torch_model(model), x_batch, method=self.method, **self.explain_kwargs)
        stats = unit_saliency_stats(torch.as_tensor(units), self.active_share)
        self._stats.append(stats)
        return stats["correlation"]

    def custom_postprocess(self, **kwargs):
        self.entropy = np.concatenate([s["entropy"] for s in self._stats])
        self.active_units = np.concatenate([s["active_units"] for s in self._stats])
