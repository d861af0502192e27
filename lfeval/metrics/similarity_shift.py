"""Label-free metrics for pair explanations (issue 30): why do a and b have close representations?

A pair explanation attributes a similarity s(a, b) (``"dot"``: <f(a), f(b)>, ``"cosine"``) to a's features
(:func:`lfeval.explain.pairs.explain_pairs`), or to feature pairs of a and b (:func:`lfeval.explain.interactions.
interactions`). Two metrics score them without labels:

**SimilarityShift** (deletion) and **SimilarityShiftInsertion**. The masking-curve protocol of the paper's feature
consistency (Crabbé & van der Schaar 2022, §4.1) and of RISE/COCOA's deletion and insertion curves, with the pair
similarity as the measured quantity. Per pair, the top-M masking units of a by ``|attribution|`` (with ``side="both"``,
also of b by b's attribution) are replaced with the baseline (deletion) or are the only ones revealed on the
baseline (insertion), M = floor(p * F) for each fraction p, and s is measured:

    deletion:   D(p) = s(a, b) - s(a_M, b)                 (a faithful attribution makes s fall fast)
    insertion:  I(p) = s(a^M, b) - s(r_a, b)               (revealing the top units restores s fast)
    score = (1 / (p_K - p_1)) * trapz(curve(p_k), p_k)     (higher is better, in s's units)

(``side="both"``: s(a_M, b_M) and s(r_a, r_b)). The per-pair curves s(p) are kept (:meth:`curve`).

**PairCompleteness**. ``|Σ A - target| / |target|`` (lower is better): for one-sided attributions of a
(``explanation="one_sided"``, IntegratedGradients' completeness axiom) target = s(a, b) - s(r_a, b); for an
interaction matrix (``explanation="interactions"``, (N, U_a, U_b)) target = s(a, b) - s(r_a, b) - s(a, r_b) +
s(r_a, r_b) (:func:`lfeval.explain.interactions.completeness_target`).

**The partner b** reaches the metric with the constructor argument ``partners=`` (inputs ``(N, *input_shape)`` aligned
with ``x_batch``, or one input shared by every row), or per call with Quantus' ``custom_batch=`` (which then
overrides them). Either way the metric hands them to Quantus as ``partners_batch``, which Quantus slices with
``x_batch`` (keys ending in ``_batch``), so each partner stays with its row whatever ``batch_size`` is.
``partners=`` is what works in :func:`quantus.evaluate` and under MetaQuantus' model and input perturbation tests
(:class:`lfeval.meta.LabelFreeMetaEvaluation`, whose tests call the metric without ``custom_batch``): the model
tests re-encode the same partners with the perturbed encoder; the input tests perturb a and keep b. When the
metric must explain a batch itself (no ``a_batch``), it calls ``explain_func(..., partners=<the batch's partners>)``:
use :class:`PairExplainFunc` (which also serves ``quantus.evaluate``'s and MetaQuantus' own calls on the whole
batch).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity()).eval()        # f(x) = x
>>> a, b = torch.tensor([[[1., 2., 3., 4.]]]).numpy(), torch.ones(1, 1, 4).numpy()
>>> oracle = torch.tensor([[[4., 3., 2., 1.]]]).numpy()                              # feature 3 last
>>> metric = SimilarityShift(partners=b, fractions=(0.0, 0.5, 1.0), baseline=0.0)
>>> [round(float(s), 3) for s in metric(net, a, a_batch=oracle)], metric.curves.tolist()   # drops 0, 3, 10
([4.0], [[10.0, 7.0, 0.0]])
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import numpy as np
import quantus
import torch

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..explain.interactions import completeness_target, interactions
from ..explain.pairs import explain_pairs, pair_inputs, similarity_encoder
from ..precision import precise
from ..validation import as_tensor, check_choice, check_inputs, check_positive_int, to_numpy
from .base import Curve, LabelFreeMetric
from .catalogue import CurveSpec, register_metric
from .functional import MASK_COUNTS, unit_importance
from .pair_functional import (
    MASKED_SIDES,
    PAIR_SIMILARITIES,
    completeness_error,
    latent_similarity,
    similarity_shift_curve,
    similarity_shift_scores,
)

_DT = quantus.helpers.enums.DataType
#: what PairCompleteness scores
EXPLANATIONS = ("one_sided", "interactions")


class PairExplainFunc:
    """A Quantus ``explain_func`` for pair attributions: ``func(model, inputs, targets=None, partners=None,
    method=..., **options)`` is :func:`lfeval.explain.pairs.explain_pairs` (side "a") of ``inputs`` against
    ``partners`` (default: the ones bound here, aligned with the whole batch the caller explains).

    ``quantus.evaluate`` (a callable in ``xai_methods``, with ``explain_func_kwargs={}``; the method is the dict key)
    and MetaQuantus' tests call it on the whole batch, so the bound partners line up; the pair metrics pass each
    batch's own partners.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    >>> b = torch.rand(3, 1, 4).numpy()
    >>> PairExplainFunc(b, method="Saliency")(net, torch.rand(3, 1, 4).numpy()).shape
    (3, 1, 4)
    """

    def __init__(self, partners=None, method: str = "IntegratedGradients", similarity: str = "dot", **options):
        self.partners = partners
        self.method = method
        self.similarity = check_choice(similarity, PAIR_SIMILARITIES, "similarity")
        self.options = options
        self.__name__ = f"pair_{method}"

    def __call__(self, model, inputs, targets=None, partners=None, method: Optional[str] = None, **options):
        partners = self.partners if partners is None else partners
        if partners is None:
            raise InvalidArgument("PairExplainFunc needs the partners b of the inputs: PairExplainFunc(partners=b) or "
                                  "call it with partners=b.")
        n, m = len(inputs), len(partners)
        if m not in (1, n):
            raise InvalidInput(f"PairExplainFunc has {m} partners for {n} inputs: bind one partner per input (the "
                               "same rows as the batch being explained) or a single shared partner.")
        options = {**self.options, **options}
        for key in ("abs", "normalise", "reduce_axes"):
            options.pop(key, None)
        return explain_pairs(model, inputs, partners, method=method or self.method, similarity=self.similarity,
                             side="a", **options)

    def __repr__(self):
        return f"PairExplainFunc(method={self.method!r}, similarity={self.similarity!r})"


def _takes_partners(func) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "partners" in params


class PairMetric(LabelFreeMetric):
    """Base of the pair metrics: the partners b of ``x_batch`` (module docstring), validated with lfeval errors
    before Quantus sees them and sliced by Quantus as ``partners_batch``."""

    requires_partners = True

    def __init__(self, partners=None, similarity: str = "dot", baseline=None, abs: bool = False,
                 normalise: bool = False, normalise_func: Optional[Callable] = None, normalise_func_kwargs=None,
                 return_aggregate: bool = False, aggregate_func: Optional[Callable] = None,
                 default_plot_func: Optional[Callable] = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.partners = partners
        self.similarity = check_choice(similarity, PAIR_SIMILARITIES, "similarity")
        self.baseline = baseline
        self._partners = None

    def _validate_x(self, x_batch, encoder) -> np.ndarray:
        """The inputs in the encoder's canonical layout as NumPy, float64 kept for a float64 encoder (the base
        class' float32 would round the pair similarities of a float64 encoder)."""
        x = encoder.canonical(check_inputs(x_batch, encoder, "x_batch"))
        return to_numpy(x, dtype=np.float64 if x.dtype == torch.float64 else np.float32)

    def _check_partners(self, model, x_batch, custom_batch) -> np.ndarray:
        """The partners of ``x_batch`` as NumPy (N, *input_shape) in the encoder's canonical layout: from
        ``custom_batch`` if given, else the constructor's; one shared partner is repeated for every row."""
        partners = custom_batch if custom_batch is not None else self.partners
        if partners is None:
            raise InvalidArgument(f"{type(self).__name__} needs the partner b of each input: pass partners=b (N, "
                                  "*input_shape) to the constructor or custom_batch=b to the call.")
        _, b = pair_inputs(check_model(model, x_batch), x_batch, partners, names=("x_batch", "partners"))
        return to_numpy(b, dtype=np.float64 if b.dtype == torch.float64 else np.float32)

    @precise
    def __call__(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, channel_first: Optional[bool] = True,
                 explain_func: Optional[Callable] = None, explain_func_kwargs: Optional[dict] = None,
                 model_predict_kwargs: Optional[dict] = None, softmax: Optional[bool] = False,
                 device: Optional[str] = None, batch_size: int = 64, custom_batch=None, **kwargs):
        """Score pair explanations of ``model`` on ``x_batch`` against their partners (module docstring);
        ``custom_batch``: partners for this call (overrides the constructor's)."""
        self._partners = self._check_partners(model, x_batch, custom_batch)
        if a_batch is None and explain_func is not None and not _takes_partners(explain_func):
            raise InvalidArgument(f"{type(self).__name__} explains each batch against its partners: pass an "
                                  "explain_func that takes `partners=` (lfeval.metrics.similarity_shift."
                                  "PairExplainFunc) or precomputed pair attributions as a_batch.")
        self._check_call(explain_func, a_batch)
        return super().__call__(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch,
                                channel_first=channel_first, explain_func=explain_func,
                                explain_func_kwargs=explain_func_kwargs, model_predict_kwargs=model_predict_kwargs,
                                softmax=softmax, device=device, batch_size=batch_size, custom_batch=None, **kwargs)

    def _check_call(self, explain_func, a_batch) -> None:
        """Subclass checks of the call's arguments (before Quantus)."""

    def custom_preprocess(self, **kwargs):
        return {"partners_batch": self._partners}

    def batch_preprocess(self, data_batch: dict) -> dict:
        """Explanations computed per batch get the batch's own partners."""
        if data_batch.get("a_batch") is None and self.explain_func is not None:
            saved = self.explain_func_kwargs
            self.explain_func_kwargs = {**(saved or {}), "partners": data_batch["partners_batch"]}
            try:
                return super().batch_preprocess(data_batch)
            finally:
                self.explain_func_kwargs = saved
        return super().batch_preprocess(data_batch)


@register_metric(text=(
    "Pair similarity-shift deletion (issue 30): mask the top-M units of a by |attribution| with the baseline and "
    "measure how s(a, b) = <f(a), f(b)> falls; the score is the normalised area of the drop s(a, b) - s(a_M, b) "
    "over the mask fractions."), curve=CurveSpec(
    "Pair similarity as the top features of a are masked (mean, 95% band)",
    "% of features masked (most important first)", "s(a_M, b)",
    "A faithful pair attribution makes the similarity to the partner fall fastest, far below Random."))
class SimilarityShift(PairMetric):
    """Similarity-shift deletion curve of pair attributions (module docstring): mask the top-M units of a (or of
    a and b) by ``|attribution|`` and measure how s(a, b) falls; the score is the normalised area of the drop
    s(a, b) - s(a_M, b) (higher is better).

    Parameters
    ----------
    partners : array ``(N, *input_shape)`` or ``(1, *input_shape)``, optional
        The partner b of each row of ``x_batch`` (or ``custom_batch=`` per call).
    fractions : sequence of float in [0, 1]
        Fractions p of the masking units masked (increasing, at least 2; default 0, 10%, ..., 100%).
    similarity : {"dot", "cosine"}
        s(a, b) = <f(a), f(b)> or the cosine of the latents; explain with the same similarity.
    side : {"a", "both"}
        Mask a only (b held fixed), or a and b, each by its own attribution (b's come from
        ``partner_attributions`` or from ``explain_func(model, b, partners=a)``).
    partner_attributions : array ``(N, *input_shape)``, optional
        b's attributions for ``side="both"`` (aligned with the partners).
    baseline : number, tensor, callable or None
        Replacement of masked units (None: the encoder's / data set's baseline).
    mask_count : {"floor", "round"}
        M = floor(p * F) (the paper's rule) or round(p * F) (at least 1).
    chunk_size : int or None
        Inputs per forward pass (bounds the memory; default :func:`lfeval.metrics.functional.chunk_rows`).

    Attributes
    ----------
    curves : np.ndarray (N, K)
        s at each fraction for the last call (``all_curves``: every call's); ``s_ab`` and ``s_ref`` (N,): the
        unmasked and the fully masked similarities.
    """

    name = "SimilarityShift"
    order = "deletion"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
    chunked = True

    def __init__(self, partners=None, fractions=tuple(np.round(np.linspace(0, 1, 11), 2)), similarity: str = "dot",
                 side: str = "a", partner_attributions=None, baseline=None, mask_count: str = "floor",
                 chunk_size: Optional[int] = None, abs: bool = True, **kwargs):
        super().__init__(partners=partners, similarity=similarity, baseline=baseline, abs=abs, **kwargs)
        try:
            fr = np.asarray(fractions, dtype=float)
        except (TypeError, ValueError):
            raise InvalidArgument(f"`fractions` must be numbers in [0, 1], got {fractions!r}.") from None
        if fr.ndim != 1 or len(fr) < 2 or np.any(fr < 0) or np.any(fr > 1) or np.any(np.diff(fr) <= 0):
            raise InvalidArgument(f"`fractions` must be >= 2 increasing values in [0, 1], got {list(fractions)}.")
        self.fractions = fr
        self.side = check_choice(side, MASKED_SIDES, "side")
        self.mask_count = check_choice(mask_count, MASK_COUNTS, "mask_count")
        self.partner_attributions = partner_attributions
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        self.curves, self.s_ab, self.s_ref, self.all_curves = None, None, None, []
        self._parts = []
        self._partner_a = None

    def _check_call(self, explain_func, a_batch) -> None:
        self._partner_a = None
        if self.side != "both":
            return
        if self.partner_attributions is not None:
            pa = as_tensor(self.partner_attributions, "partner_attributions")
            if tuple(pa.shape) != tuple(self._partners.shape):
                raise InvalidInput(f"`partner_attributions` has shape {tuple(pa.shape)} but the partners have "
                                   f"{tuple(self._partners.shape)}; pass b's attributions, one per partner.")
            self._partner_a = pa.cpu().numpy()
        elif explain_func is None or not _takes_partners(explain_func):
            raise InvalidArgument("side='both' masks b by its own attributions: pass partner_attributions= or an "
                                  "explain_func that takes `partners=` (PairExplainFunc) to explain b against a.")

    def custom_preprocess(self, **kwargs):
        self._parts = []
        extra = {"partners_batch": self._partners}
        if self._partner_a is not None:
            extra["partner_attributions_batch"] = self._partner_a
        return extra

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, partners_batch=None,
                       partner_attributions_batch=None, **kwargs) -> np.ndarray:
        encoder = self.torch_model(model)
        device, dtype = encoder.device, encoder.data_dtype
        a = as_tensor(x_batch, "x_batch", dtype=dtype, device=device)
        b = as_tensor(partners_batch, "partners", dtype=dtype, device=device)
        shape = tuple(a.shape[1:])
        imp_a = unit_importance(encoder, as_tensor(a_batch, "a_batch", device=device), shape)
        imp_b = None
        if self.side == "both":
            if partner_attributions_batch is None:  # b explained against a with the call's explain function
                pa = self.explain_func(model=encoder, inputs=to_numpy(b), targets=None, partners=to_numpy(a),
                                       **{k: v for k, v in (self.explain_func_kwargs or {}).items()
                                          if k != "partners"})
            else:
                pa = partner_attributions_batch
            imp_b = unit_importance(encoder, as_tensor(pa, "partner_attributions", device=device), shape)
        values, s_ab, s_ref = similarity_shift_curve(encoder, a, b, imp_a, self.fractions, self.similarity,
                                                     self.baseline, imp_b, self.mask_count, self.order,
                                                     self.chunk_size)
        self._parts.append((values.cpu().numpy(), s_ab.cpu().numpy(), s_ref.cpu().numpy()))
        return similarity_shift_scores(values, s_ab, s_ref, self.fractions, self.order).cpu().numpy()

    def custom_postprocess(self, **kwargs):
        if self._parts:
            self.curves, self.s_ab, self.s_ref = (np.concatenate(p) for p in zip(*self._parts))
            self.all_curves.append(self.curves)

    def curve(self) -> Curve:
        """The last call's similarity curves over the % of units masked (deletion) or revealed (insertion)."""
        return Curve(x=self.fractions * 100, series={"similarity": self.curves})


@register_metric(text=(
    "Pair similarity-shift insertion: reveal the top-M units of a on the baseline and measure how s(a, b) comes "
    "back; the score is the normalised area of the gain s(a^M, b) - s(r_a, b) over the fractions."),
    curve=CurveSpec("Pair similarity as the top features of a are revealed on the baseline (mean, 95% band)",
                    "% of features revealed (most important first)", "s(a^M, b)",
                    "A faithful pair attribution restores the similarity to the partner with few features."))
class SimilarityShiftInsertion(SimilarityShift):
    """The insertion twin of :class:`SimilarityShift`: start from the baseline and reveal the top-M units of a (or
    of a and b); the score is the normalised area of the gain s(a^M, b) - s(r_a, b) (higher is better)."""

    name = "SimilarityShiftInsertion"
    order = "insertion"


@register_metric(text=(
    "Completeness error of one-sided pair attributions: |sum of the attributions of a - (s(a, b) - s(r_a, b))| "
    "/ |s(a, b) - s(r_a, b)| (IntegratedGradients' completeness axiom on the pair similarity)."))
class PairCompleteness(PairMetric):
    """Completeness error of pair explanations (module docstring), lower is better.

    Parameters
    ----------
    partners : array ``(N, *input_shape)`` or ``(1, *input_shape)``, optional
        The partner b of each row (or ``custom_batch=`` per call).
    explanation : {"one_sided", "interactions"}
        ``"one_sided"``: a_batch are attributions of a for s(., b) (any pair method; meta-evaluable with
        MetaQuantus); target s(a, b) - s(r_a, b). ``"interactions"``: a_batch are interaction matrices (N, U_a, U_b)
        of :func:`lfeval.explain.interactions.interactions`; without a_batch the metric computes them with
        ``n_steps`` and ``method`` (then it scores the integration); target s(a, b) - s(r_a, b) - s(a, r_b) +
        s(r_a, r_b).
    similarity : {"dot", "cosine"}
    baseline : number, tensor, callable or None
        r_a and r_b (None: the encoder's baseline); the explanations must use the same.
    relative : bool
        Divide by ``|target|`` (floored at ``eps``).
    n_steps, method :
        Quadrature of the interactions the metric computes itself.

    Notes
    -----
    Text (one-sided): s(r_a, b) is the encoder on the baseline tokens, while attributions through the input
    embeddings integrate from the baseline tokens' embeddings under a's attention mask; use
    ``explanation="interactions"`` (whose target follows the embedding path) for an exact check on text.
    """

    name = "PairCompleteness"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.LOWER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.AXIOMATIC

    def __init__(self, partners=None, explanation: str = "one_sided", similarity: str = "dot", baseline=None,
                 relative: bool = True, eps: float = 1e-12, n_steps: int = 32, method: str = "gausslegendre",
                 **kwargs):
        super().__init__(partners=partners, similarity=similarity, baseline=baseline, abs=False, **kwargs)
        self.explanation = check_choice(explanation, EXPLANATIONS, "explanation")
        self.relative, self.eps = bool(relative), float(eps)
        self.n_steps, self.method = check_positive_int(n_steps, "n_steps"), method
        self.example_attributions = self.explanation == "interactions"  # not input-shaped: Quantus' checks skipped
        self.targets, self._parts = None, []

    def _validate_a(self, a_batch, x_batch):
        if self.explanation == "one_sided":
            return super()._validate_a(a_batch, x_batch)
        a = as_tensor(a_batch, "a_batch", dtype=torch.float64)
        if a.ndim != 3 or len(a) != len(x_batch):
            raise InvalidInput(f"`a_batch` must be the interaction matrices ({len(x_batch)}, U_a, U_b) of "
                               f"lfeval.explain.interactions.interactions, got shape {tuple(a.shape)}.")
        if not bool(torch.isfinite(a).all()):
            raise InvalidInput("`a_batch` holds NaN/inf interactions; recompute them.")
        return a.numpy()

    @precise
    def __call__(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, explain_func=None,
                 explain_func_kwargs=None, custom_batch=None, batch_size: int = 64, **kwargs):
        if self.explanation == "interactions" and a_batch is None:
            partners = self._check_partners(model, x_batch, custom_batch)
            a_batch = interactions(model, x_batch, partners, n_steps=self.n_steps, similarity=self.similarity,
                                   baseline=self.baseline, method=self.method)
        return super().__call__(model, x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch,
                                explain_func=explain_func, explain_func_kwargs=explain_func_kwargs,
                                custom_batch=custom_batch, batch_size=batch_size, **kwargs)

    def general_preprocess(self, model, x_batch, y_batch, a_batch, s_batch, channel_first, explain_func,
                           explain_func_kwargs, model_predict_kwargs, softmax, device, custom_batch):
        if self.explanation == "one_sided":
            return super().general_preprocess(model, x_batch, y_batch, a_batch, s_batch, channel_first,
                                              explain_func, explain_func_kwargs, model_predict_kwargs, softmax,
                                              device, custom_batch)
        self.explain_func, self.explain_func_kwargs = explain_func, dict(explain_func_kwargs or {})
        data = {"model": model, "x_batch": x_batch, "y_batch": y_batch, "a_batch": a_batch, "s_batch": s_batch}
        data.update(self.custom_preprocess())
        return data

    def custom_preprocess(self, **kwargs):
        self._parts = []
        return {"partners_batch": self._partners}

    def target(self, encoder, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """What the explanation should sum to, (N,) float64 (module docstring)."""
        if self.explanation == "interactions":
            return completeness_target(encoder, a, b, similarity=self.similarity, baseline=self.baseline).double()
        enc = similarity_encoder(encoder, a, self.similarity)
        with torch.no_grad():
            za, zb = enc(a), enc(b)
            zr = enc(enc.baseline_for(a, self.baseline))
        return (latent_similarity(za, zb, "dot") - latent_similarity(zr, zb, "dot")).double().cpu()

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, partners_batch=None,
                       **kwargs) -> np.ndarray:
        encoder = self.torch_model(model)
        a = as_tensor(x_batch, "x_batch", dtype=encoder.data_dtype, device=encoder.device)
        b = as_tensor(partners_batch, "partners", dtype=encoder.data_dtype, device=encoder.device)
        total = torch.as_tensor(np.asarray(a_batch), dtype=torch.float64).reshape(len(a), -1).sum(1)
        target = self.target(encoder, a, b)
        self._parts.append(target.numpy())
        return completeness_error(total, target, self.relative, self.eps).numpy()

    def custom_postprocess(self, **kwargs):
        self.targets = np.concatenate(self._parts) if self._parts else None


__all__ = ["SimilarityShift", "SimilarityShiftInsertion", "PairCompleteness", "PairMetric", "PairExplainFunc",
           "EXPLANATIONS"]
