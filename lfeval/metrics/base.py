"""The shared base class of lfeval's label-free Quantus metrics.

A :class:`LabelFreeMetric` is a real :class:`quantus.Metric`: it runs Quantus'
``general_preprocess`` -> per-batch ``evaluate_batch`` -> ``custom_postprocess`` flow, so it
works directly and inside :func:`quantus.evaluate`. What it changes:

* ``model`` may be a plain ``nn.Module`` or an :class:`lfeval.Encoder`; the metric works on the
  Encoder (:func:`lfeval.as_encoder`), so the modality, masking unit and baseline come from it.
* ``y_batch`` defaults to ``None`` (encoders have no label to explain); a metric that needs
  labels only to *score* sets ``requires_labels = True`` and raises
  :class:`lfeval.errors.LabelsRequired` without them; one that ignores them warns.
* ``softmax`` is forced off (a softmax over latent units is meaningless).
* Inputs are validated up front with lfeval errors (empty batch, NaN, shape mismatch,
  encoder in train mode; attributions that are all zero or constant) instead of Quantus' bare
  asserts, once and in torch: Quantus' ``assert_attributions`` (a Python set of every value) is
  skipped for attributions lfeval has checked.
* Subclasses compute in torch on whole batches, on the model's device: use
  :meth:`torch_model` and :meth:`encode`, never ``model.predict`` per sample.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Optional

import numpy as np
import quantus
import torch
from quantus.helpers import utils as qutils

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput, LabelsRequired, NotAdaptable
from ..precision import precise
from ..validation import (
    as_tensor,
    check_attributions,
    check_batch,
    check_inputs,
    check_labels,
    check_positive_int,
    to_numpy,
)
from .curve import Curve

#: the kinds of explanation a metric scores: input-shaped feature attributions, (N, n_train) example importance
FEATURES, EXAMPLES = "features", "examples"


def score_direction(metric) -> str:
    """``"higher"`` or ``"lower"``: which scores of ``metric`` are better, from its Quantus ``score_direction``
    (as corrected by :class:`lfeval.metrics.LabelFree`). The one place a direction is read.

    >>> import quantus
    >>> score_direction(quantus.Complexity()), score_direction(quantus.Sparseness())
    ('lower', 'higher')
    """
    direction = getattr(metric, "score_direction", None)  # any Quantus-style estimator, ours or stock
    if direction is None:
        raise InvalidArgument(f"{type(metric).__name__} declares no `score_direction`; pass 'higher' or 'lower'.")
    value = str(getattr(direction, "value", direction)).lower()
    if value not in ("higher", "lower"):
        raise InvalidArgument(f"{type(metric).__name__}.score_direction must be 'higher' or 'lower', "
                              f"got {direction!r}.")
    return value


class LabelFreeMetric(quantus.Metric):
    """Base class: a Quantus metric for encoders f: x -> R^d, with no label to explain.

    Subclasses declare Quantus' metadata (``name``, ``data_applicability``,
    ``model_applicability``, ``score_direction``, ``evaluation_category``) and implement
    ``evaluate_batch(model, x_batch, y_batch, a_batch, s_batch, **kwargs) -> list/array``.
    """

    # What the metric scores and needs, one fact each: the catalogue (:mod:`lfeval.metrics.catalogue`) derives an
    # entry's kinds and run needs from these flags, and the metric acts on them.
    #: The kinds of explanation it scores: ``(FEATURES,)`` input-shaped attributions, ``(EXAMPLES,)`` (N, n_train)
    #: example-importance matrices, or both (an instance then scores one, e.g. ``PretextCorrelation(explanations=)``).
    explanations: tuple = (FEATURES,)
    #: True when the metric needs labels to score (never to explain).
    requires_labels: bool = False
    #: True when the metric reads ``y_batch`` when it is given (otherwise a given y_batch is ignored with a warning).
    uses_labels: bool = False
    #: True when it is built on the training inputs (its ``x_train`` argument).
    requires_training: bool = False
    #: True when it compares the encoder with reference encoders (its ``references`` argument).
    requires_references: bool = False
    #: True when it adds noise to the inputs or imputes values: token ids (text) have none, so it refuses them.
    requires_continuous: bool = False
    #: True when it scores pair explanations and needs each input's partner b (its ``partners`` argument).
    requires_partners: bool = False
    model_applicability = {quantus.helpers.enums.ModelType.TORCH}
    #: True when ``evaluate_batch`` bounds its own memory (works in chunks): Quantus' ``batch_size`` then only
    #: sets how many samples ``explain_func`` explains at a time, and a precomputed ``a_batch`` is evaluated in
    #: one call.
    chunked: bool = False

    def __init__(
        self,
        abs: bool = False,
        normalise: bool = False,
        normalise_func: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        normalise_func_kwargs: Optional[Dict[str, Any]] = None,
        return_aggregate: bool = False,
        aggregate_func: Optional[Callable] = None,
        default_plot_func: Optional[Callable] = None,
        disable_warnings: bool = False,
        display_progressbar: bool = False,
        **kwargs,
    ):
        super().__init__(
            abs=abs,
            normalise=normalise,
            normalise_func=normalise_func,
            normalise_func_kwargs=normalise_func_kwargs,
            return_aggregate=return_aggregate,
            aggregate_func=aggregate_func,
            default_plot_func=default_plot_func,
            disable_warnings=disable_warnings,
            display_progressbar=display_progressbar,
            **kwargs,
        )

    @property
    def example_attributions(self) -> bool:
        """True when an "attribution" is an (N, n_train) example-importance matrix, not an input-shaped map (the
        metric's :attr:`explanations` are examples only): Quantus' input-shape checks are then skipped."""
        return tuple(self.explanations) == (EXAMPLES,)

    @example_attributions.setter
    def example_attributions(self, value: bool) -> None:
        self.explanations = (EXAMPLES,) if value else (FEATURES,)

    @precise
    def __call__(
        self,
        model,
        x_batch,
        y_batch=None,
        a_batch=None,
        s_batch=None,
        channel_first: Optional[bool] = True,
        explain_func: Optional[Callable] = None,
        explain_func_kwargs: Optional[Dict] = None,
        model_predict_kwargs: Optional[Dict] = None,
        softmax: Optional[bool] = False,
        device: Optional[str] = None,
        batch_size: int = 64,
        custom_batch: Any = None,
        **kwargs,
    ):
        """Score explanations of ``model`` on ``x_batch`` (NumPy in, list of per-sample scores out).

        Parameters
        ----------
        model : torch.nn.Module
            The encoder, in eval mode, mapping (N, ...) to (N, d).
        x_batch : np.ndarray, (N, C, H, W), (N, 1, D) or (N, T, C)
            Inputs, channel-first.
        y_batch : np.ndarray, optional
            Labels. Not needed; see ``requires_labels`` / ``uses_labels`` of the metric.
        a_batch : np.ndarray, optional
            Precomputed attributions; otherwise ``explain_func(model, inputs, targets, **explain_func_kwargs)``
            is called per batch (e.g. ``lfeval.explain``).
        """
        model = check_model(model, x_batch)
        if self.requires_continuous and not model.modality.continuous:
            raise NotAdaptable(f"{self.__class__.__name__} adds noise to the inputs or imputes removed values; "
                               f"{model.modality.name} inputs are token ids, which have no values to perturb. Use a "
                               "metric that removes tokens, e.g. RepresentationShift (token deletion).")
        batch_size = check_positive_int(batch_size, "batch_size")
        x_batch = self._validate_x(x_batch, model)
        y_batch = self._validate_y(y_batch, len(x_batch))
        if a_batch is not None:
            a_batch = self._validate_a(a_batch, x_batch)
            if self.chunked:
                batch_size = max(int(batch_size), len(x_batch))
        elif explain_func is None:
            raise InvalidArgument(
                f"{self.__class__.__name__}: pass either `a_batch` (precomputed attributions) or "
                "`explain_func` (e.g. lfeval.explain) with `explain_func_kwargs`."
            )
        if softmax:
            warnings.warn(f"{self.__class__.__name__}: softmax=True is ignored; latents are not class scores.")
        return super().__call__(
            model=model,
            x_batch=x_batch,
            y_batch=y_batch,
            a_batch=a_batch,
            s_batch=s_batch,
            custom_batch=custom_batch,
            channel_first=channel_first,
            explain_func=explain_func,
            explain_func_kwargs=explain_func_kwargs,
            model_predict_kwargs=model_predict_kwargs,
            softmax=False,
            device=device,
            batch_size=batch_size,
            **kwargs,
        )

    # ------------------------------------------------------------------ validation
    def _validate_x(self, x_batch, encoder) -> np.ndarray:
        """The inputs in the encoder's canonical layout (e.g. (N, 1, D) rows), as NumPy."""
        return to_numpy(encoder.canonical(check_inputs(x_batch, encoder, "x_batch")))

    def _validate_y(self, y_batch, n: int):
        if y_batch is None:
            if self.requires_labels:
                raise LabelsRequired(
                    f"{self.__class__.__name__} needs `y_batch` (labels are used only to score, never to "
                    "explain); pass the test labels, e.g. y_batch=ds.y_test.numpy()."
                )
            return None
        if self.requires_labels or self.uses_labels:
            return check_labels(y_batch, "y_batch", n).numpy()
        y = np.asarray(y_batch.cpu() if isinstance(y_batch, torch.Tensor) else y_batch)
        if y.ndim != 1 or len(y) != n:
            raise InvalidInput(f"`y_batch` has shape {y.shape} but `x_batch` has {n} samples.")
        if not (self.requires_labels or self.uses_labels):
            warnings.warn(
                f"{self.__class__.__name__} is label-free and ignores `y_batch`; pass y_batch=None to silence this."
            )
        return y

    def _validate_a(self, a_batch, x_batch: np.ndarray) -> np.ndarray:
        """Attributions: same number of samples, finite, shape equal to x (or x without its channel axis), not
        all zero and not constant; with ``example_attributions``, an (N, n_train) matrix.

        These are Quantus' ``assert_attributions`` checks as lfeval errors, done once in torch: Quantus' own
        pass (a Python set of every value) is then skipped for lfeval metrics."""
        a = as_tensor(a_batch, "a_batch")
        if self.example_attributions:
            a = check_batch(a, "a_batch").cpu().numpy()
            if a.ndim != 2 or len(a) != len(x_batch):
                raise InvalidInput(f"`a_batch` must be the ({len(x_batch)}, n_train) example-importance matrix, got "
                                   f"shape {a.shape}.")
            return a
        if len(a) != len(x_batch):
            raise InvalidInput(f"`a_batch` has {len(a)} samples but `x_batch` has {len(x_batch)}; pass one attribution "
                               "per input.")
        a = check_attributions(a, "a_batch")
        shape = tuple(a.shape)
        ok = shape == x_batch.shape or (shape[0] == x_batch.shape[0] and shape[1:] == x_batch.shape[2:]) or (
            a.ndim == x_batch.ndim and shape[1] == 1 and shape[2:] == x_batch.shape[2:]
        )
        if not ok:
            raise InvalidInput(
                f"`a_batch` has shape {shape} but `x_batch` has shape {x_batch.shape}; attributions must "
                "match the inputs (optionally with the channel axis summed to size 1)."
            )
        return a.cpu().numpy()

    # ------------------------------------------------------------------ Quantus' preprocessing, validated once
    def general_preprocess(self, model, x_batch, y_batch, a_batch, s_batch, channel_first, explain_func,
                           explain_func_kwargs, model_predict_kwargs, softmax, device, custom_batch):
        """Quantus' ``general_preprocess``, without its ``assert_attributions`` (``__call__`` validated
        ``a_batch`` already, see :meth:`_validate_a`); example-importance matrices also skip its input-shape
        handling."""
        if self.example_attributions:
            self.explain_func = explain_func
            self.explain_func_kwargs = dict(explain_func_kwargs or {})
            self.custom_preprocess(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch,
                                   s_batch=s_batch, custom_batch=custom_batch)
            return {"model": model, "x_batch": x_batch, "y_batch": y_batch, "a_batch": a_batch, "s_batch": s_batch}
        if a_batch is None:  # explanations come per batch, validated in batch_preprocess
            return super().general_preprocess(
                model=model, x_batch=x_batch, y_batch=y_batch, a_batch=None, s_batch=s_batch,
                channel_first=channel_first, explain_func=explain_func, explain_func_kwargs=explain_func_kwargs,
                model_predict_kwargs=model_predict_kwargs, softmax=softmax, device=device, custom_batch=custom_batch)
        # Quantus 0.6.0's general_preprocess for a given a_batch, line for line, minus assert_attributions.
        if not isinstance(channel_first, bool):
            channel_first = qutils.infer_channel_first(x_batch)
        x_batch = qutils.make_channel_first(x_batch, channel_first)
        if model is not None:
            model = qutils.get_wrapped_model(model=model, channel_first=channel_first, softmax=softmax,
                                             device=device, model_predict_kwargs=model_predict_kwargs)
        self.explain_func = explain_func
        self.explain_func_kwargs = explain_func_kwargs or {}
        if device is not None and "device" not in self.explain_func_kwargs:
            self.explain_func_kwargs["device"] = device
        a_batch = self._finish_attributions(a_batch, x_batch)
        data = {"model": model, "x_batch": x_batch, "y_batch": y_batch, "a_batch": a_batch, "s_batch": s_batch,
                "custom_batch": custom_batch}
        extra = self.custom_preprocess(**data)
        if extra is not None:
            data.update(extra)
        if data["custom_batch"] is None:
            del data["custom_batch"]
        return data

    def _finish_attributions(self, a_batch: np.ndarray, x_batch: np.ndarray) -> np.ndarray:
        """Validated attributions as Quantus hands them to ``evaluate_batch``: channel axis expanded, attribution
        axes recorded, normalised and made absolute if the metric asks."""
        a_batch = qutils.expand_attribution_channel(a_batch, x_batch)
        self.a_axes = qutils.infer_attribution_axes(a_batch, x_batch)
        if self.normalise:
            a_batch = self.normalise_func(a_batch)
        if self.abs:
            a_batch = np.abs(a_batch)
        return a_batch

    def batch_preprocess(self, data_batch: dict) -> dict:
        """Quantus' ``batch_preprocess``; explanations computed here are validated with lfeval's checks
        (:meth:`_validate_a`) instead of Quantus' ``assert_attributions``."""
        if data_batch.get("a_batch") is None:
            model = data_batch["model"]
            x = data_batch["x_batch"]
            if isinstance(model, quantus.helpers.model.model_interface.ModelInterface):
                x = model.shape_input(x=x, shape=x.shape, channel_first=True, batched=True)
            a = self.explain_func(model=self.torch_model(model), inputs=x, targets=data_batch["y_batch"],
                                  **self.explain_func_kwargs)
            a = self._validate_a(a, data_batch["x_batch"])
            data_batch["a_batch"] = a if self.example_attributions else self._finish_attributions(
                a, data_batch["x_batch"])
        if self.example_attributions:
            return data_batch
        if self.a_axes is None:
            self.a_axes = qutils.infer_attribution_axes(data_batch["a_batch"], data_batch["x_batch"])
        extra = self.custom_batch_preprocess(**data_batch)
        if extra is not None:
            data_batch.update(extra)
        return data_batch

    # ------------------------------------------------------------------ torch helpers
    @staticmethod
    def torch_model(model):
        """The :class:`lfeval.Encoder` behind Quantus' model wrapper (or the model itself)."""
        return model.get_model() if isinstance(model, quantus.helpers.model.model_interface.ModelInterface) else model

    def curve(self) -> Optional[Curve]:
        """The last call's per-sample curves (:class:`lfeval.metrics.Curve`), for metrics that have them."""
        return None
