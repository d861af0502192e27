"""COCOA's evaluation (Lin et al., ICLR 2023): insertion and deletion curves of the contrastive corpus
similarity and of the corpus majority probability, as label-free Quantus metrics.

For an explicand x with corpus target t and corpus majority class c (:class:`lfeval.explain.corpus.Corpus`):

* **deletion**: units are replaced with the baseline, most important first, in ``steps`` equal steps (50 in
  the paper; :func:`~lfeval.metrics.functional.step_counts`); a faithful attribution makes the target fall
  fast, so **lower** AUC is better.
* **insertion**: starting from the baseline, units are revealed most important first; the target should rise
  fast, so **higher** AUC is better.

The target is the contrastive corpus similarity <f̂(x'), t> (``target="similarity"``) or the probability of the
corpus majority class under a linear probe on the pool's latents (``target="majority_probability"``; the probe
learns the labels with ``by="label"``, the k-means clusters with ``by="cluster"``). The AUC is the trapezoid
area over the fraction of units in [0, 1]. Units are ranked by the signed attribution summed over a unit's
channels, as COCOA does (``abs=True`` ranks by |attribution|). The corpus and the foil are recomputed with the
encoder being scored (so MetaQuantus' model perturbations change them too), and the foil is drawn with
``foil_seed`` (default ``seed + 1``), independently of the foil COCOA explained with, as in the paper.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import quantus
import torch

from ..errors import InvalidArgument
from ..explain.corpus import Corpus
from ..validation import as_tensor, check_choice, check_positive_int
from . import functional as fn
from .base import Curve, LabelFreeMetric
from .catalogue import CurveSpec, register_metric

TARGETS = ("similarity", "majority_probability")
_DT = quantus.helpers.enums.DataType
#: target -> (its short name, what it is), for the catalogue's texts
_TARGET_TEXT = {
    "similarity": ("contrastive corpus similarity", "the contrastive corpus similarity (mean cosine to the corpus "
                   "minus mean cosine to the foil)"),
    "majority_probability": ("corpus majority probability", "the probability of the corpus' majority class under a "
                             "linear probe on the training latents (cluster ids as classes, or labels with "
                             "by='label')"),
}


def _catalogued(name: str, target: str):
    """Register the decorated class (its ``order`` says insertion or deletion) as the catalogue metric ``name``
    of COCOA's ``target``, with 50 steps (one per feature for inputs of fewer)."""

    def decorate(cls):
        short, what = _TARGET_TEXT[target]
        inserting = cls.order == "insertion"
        how = (f"features are revealed on the baseline most important first while {what} is tracked; a faster rise "
               "is better." if inserting else
               f"features are deleted most important first while {what} is tracked; a faster fall is better.")
        text = ("COCOA's evaluation (Lin et al. 2023): the explicand's corpus is its k-means cluster of training "
                "latents (metric_params by='label' or 'index' for the other rules) and the foil a random sample of "
                "the other training examples; " + how + " 50 steps (one per feature for inputs of fewer), trapezoid "
                "area over the fraction of features.")
        curve = CurveSpec(f"{cls.order.capitalize()} curves of the {short} (mean, 95% band)",
                          f"% of features {'inserted into the baseline' if inserting else 'deleted'} "
                          "(most important first)", short,
                          f"COCOA's {cls.order} curves: a faithful attribution makes the {short} "
                          f"{'rise' if inserting else 'fall'} fast.")
        return register_metric(name, text=text, curve=curve, defaults=lambda ctx: {
            "seed": ctx.seed, "target": target, "steps": min(50, ctx.n_features)})(cls)

    return decorate


@_catalogued("CorpusMajorityDeletion", "majority_probability")
@_catalogued("CorpusDeletion", "similarity")
class CorpusDeletion(LabelFreeMetric):
    """COCOA's deletion curve of the contrastive corpus similarity or the corpus majority probability.

    Parameters
    ----------
    x_train : array ``(P, *input_shape)``
        The pool the corpus and the foil are drawn from.
    target : {"similarity", "majority_probability"}
    steps : int
        Perturbation steps (50 as COCOA); the curve has steps + 1 points.
    baseline : number, tensor, callable or None
        Value of removed units (None: the encoder's baseline).
    per_channel : bool
        Rank every entry instead of the modality's masking unit.
    by, y_train, label, corpus_index, foil_index, n_clusters, corpus_size, foil_size, k :
        The corpus rule (:class:`lfeval.explain.corpus.Corpus`); use the same as COCOA's explanations.
    seed : int
        Seeds k-means and the corpus draws (``corpus_seed``).
    foil_seed : int, optional
        Seeds the evaluation foil (default ``seed + 1``).
    chunk_size : int
        Perturbed inputs per forward pass.

    Notes
    -----
    ``curves`` (N, steps + 1) and ``fractions`` hold the last call's curves (:meth:`curve`).
    """

    name = "CorpusDeletion"
    order = "deletion"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.LOWER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
    requires_training = True

    def __init__(self, x_train, target: str = "similarity", steps: int = 50, baseline=None, per_channel: bool = False,
                 by: str = "cluster", y_train=None, label: Optional[int] = None, corpus_index=None, foil_index=None,
                 n_clusters: int = 10, corpus_size: int = 100, foil_size: int = 500, k: int = 10, seed: int = 0,
                 foil_seed: Optional[int] = None, chunk_size: int = 512, abs: bool = False, normalise: bool = False,
                 normalise_func: Optional[Callable] = None, normalise_func_kwargs=None, return_aggregate: bool = False,
                 aggregate_func: Optional[Callable] = None, default_plot_func: Optional[Callable] = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.target = check_choice(target, TARGETS, "COCOA evaluation target")
        self.steps, self.chunk_size = check_positive_int(steps, "steps"), check_positive_int(chunk_size, "chunk_size")
        self.baseline, self.per_channel = baseline, bool(per_channel)
        self.seed = int(seed)
        self.corpus = Corpus(x_train, by=by, y_train=y_train, label=label, corpus_index=corpus_index,
                             foil_index=foil_index, n_clusters=n_clusters, corpus_size=corpus_size,
                             foil_size=foil_size, k=k, corpus_seed=self.seed,
                             foil_seed=self.seed + 1 if foil_seed is None else foil_seed)
        self.curves, self.fractions, self._fitted, self._parts = None, None, None, []

    def importance(self, encoder, a: torch.Tensor, shape: tuple) -> torch.Tensor:
        """Signed importance (N, F) per masking unit: the attribution summed over the unit's entries."""
        if self.per_channel:
            return a.reshape(len(a), -1)
        return encoder.modality.unit_importance(a.clamp_min(0), shape) - encoder.modality.unit_importance(
            (-a).clamp_min(0), shape)

    def custom_preprocess(self, **kwargs):
        self._fitted, self._parts = None, []

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        encoder = self.torch_model(model)
        if self._fitted is None or self._fitted.encoder is not encoder:
            self._fitted = self.corpus.fit(encoder)
        x = as_tensor(x_batch, "x_batch", device=encoder.device)
        a = as_tensor(a_batch, "a_batch", device=encoder.device)
        n_feat = x[0].numel() if self.per_channel else encoder.modality.n_features(tuple(x.shape[1:]))
        if self.steps > n_feat:
            raise InvalidArgument(f"`steps`={self.steps} exceeds the {n_feat} units of an input.")
        values, fractions = fn.corpus_curves(encoder, x, self.importance(encoder, a, tuple(x.shape[1:])), self._fitted,
                                          self.target, self.order, self.steps, self.baseline, self.chunk_size)
        self.fractions = fractions.cpu().numpy()
        self._parts.append(values.cpu().numpy())
        return fn.normalised_auc(values.double(), fractions).cpu().numpy()

    def custom_postprocess(self, **kwargs):
        self.curves = np.concatenate(self._parts) if self._parts else None

    def curve(self) -> Curve:
        """The last call's curves over the % of units deleted (or inserted)."""
        return Curve(x=self.fractions * 100, series={self.target: self.curves})


@_catalogued("CorpusMajorityInsertion", "majority_probability")
@_catalogued("CorpusInsertion", "similarity")
class CorpusInsertion(CorpusDeletion):
    """COCOA's insertion curve: units revealed on the baseline, most important first (higher AUC is better).
    Parameters are :class:`CorpusDeletion`'s."""

    name = "CorpusInsertion"
    order = "insertion"
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER


__all__ = ["CorpusDeletion", "CorpusInsertion", "TARGETS"]
