"""Fully label-free example consistency: :class:`~lfeval.metrics.SimilarityRate` with the labels replaced by
structure of a reference representation.

SimilarityRate (Crabbé & van der Schaar 2022, §4.1) asks whether the M most important training examples of a
test example share its label. Without labels, "same class" becomes one of:

* ``rule="kmeans"``: the same **pseudo-label**, the k-means cluster (seeded) of the reference representation:
  clusters are fitted on the training examples and a test example takes its nearest centroid;
* ``rule="knn"``: membership of the test example's **k-NN neighbourhood**: the k training examples nearest to
  it in the reference representation (the rate at M is then a precision@M against that neighbourhood).

The reference representation is, by ``reference``: ``None``, the scored encoder's own latents (recomputed for
every encoder, so MetaQuantus' model perturbations move it); ``"input"``, the flattened inputs (independent of
every encoder); or a fixed encoder. The score is the top-M rate averaged over M (minus the bottom-M rate with
``contrast``), as SimilarityRate's. benchmarks/bench_label_free_similarity.py measures how it correlates with
the labelled rate on digits.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import quantus
import torch

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..validation import as_tensor, check_batch, check_choice, check_finite, check_module, check_positive_int
from .base import EXAMPLES, Curve, LabelFreeMetric
from .catalogue import CurveSpec, register_metric
from .functional import encode_chunks, membership_rates
from .similarity_rate import example_counts, run_counts

RULES = ("kmeans", "knn")
_DT = quantus.helpers.enums.DataType


@register_metric("NeighbourhoodRate", defaults=lambda ctx: {
    "rule": "knn", "M": run_counts(len(ctx.x_train)), "k": min(20, len(ctx.x_train)), "seed": ctx.seed}, text=(
    "Fully label-free example consistency: the share of the top-M training examples among the test "
    "example's 20 nearest training examples in the encoder's latent space (precision@M against that "
    "neighbourhood), averaged over M. No label is read. DkNN retrieves exactly these neighbours, so it "
    "scores near the top by construction: use it to compare the other methods."))
@register_metric(defaults=lambda ctx: {"rule": "kmeans", "M": run_counts(len(ctx.x_train)), "seed": ctx.seed}, text=(
    "Fully label-free example consistency: SimilarityRate with the labels replaced by k-means pseudo-labels "
    "(10 clusters) of the encoder's latents: the share of the top-M training examples in the test "
    "example's cluster, averaged over M. No label is read."), curve=CurveSpec(
    "Pseudo-class rate of the top-M (solid) and bottom-M (dashed) training examples",
    "M (most / least important training examples)", "pseudo-class rate",
    "SimilarityRate's curves with k-means pseudo-labels of the encoder's own latents in place of labels.",
    ylim=(0, 1)))
class LabelFreeSimilarityRate(LabelFreeMetric):
    """Share of the top-M training examples in the test example's pseudo-class or latent neighbourhood.

    Parameters
    ----------
    x_train : array ``(n_train, *input_shape)``
        The training examples (columns of the importance matrix).
    rule : {"kmeans", "knn"}
        Pseudo-labels from k-means, or the k-NN neighbourhood.
    reference : None, "input" or nn.Module
        The representation the rule is applied to (module docstring).
    n_clusters : int
        k-means clusters (``rule="kmeans"``).
    k : int
        Neighbourhood size (``rule="knn"``).
    M : int, float or sequence
        Counts (ints >= 1) or fractions of n_train (floats in (0, 1]).
    contrast : bool
        Score top-M rate minus bottom-M rate.
    seed : int
        Seed of k-means.

    Examples
    --------
    >>> import numpy as np, torch
    >>> x_train = np.array([[[0.0]], [[0.1]], [[5.0]], [[5.1]]], dtype=np.float32)
    >>> metric = LabelFreeSimilarityRate(x_train, rule="kmeans", reference="input", n_clusters=2, M=[1, 2])
    >>> importance = np.array([[0.9, 0.8, 0.1, 0.0]], dtype=np.float32)     # the two examples near 0 first
    >>> [float(s) for s in metric(torch.nn.Flatten().eval(), np.array([[[0.05]]], dtype=np.float32),
    ...                           a_batch=importance)]
    [1.0]
    """

    name = "LabelFreeSimilarityRate"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
    explanations = (EXAMPLES,)
    requires_training = True

    def __init__(self, x_train, rule: str = "kmeans", reference=None, n_clusters: int = 10, k: int = 20,
                 M=(1, 5, 10, 20, 50), contrast: bool = False, seed: int = 0, abs: bool = False,
                 normalise: bool = False, normalise_func: Optional[Callable] = None, normalise_func_kwargs=None,
                 return_aggregate: bool = False, aggregate_func: Optional[Callable] = None,
                 default_plot_func: Optional[Callable] = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if x_train is None:
            raise InvalidArgument("`x_train` is required: the training examples the importance matrix ranks.")
        self.x_train = check_finite(check_batch(as_tensor(x_train, "x_train"), "x_train"), "x_train").float()
        n_train = len(self.x_train)
        self.rule = check_choice(rule, RULES, "label-free similarity rule")
        if reference is not None and not (isinstance(reference, str) and reference == "input"):
            check_module(reference, "reference")
        self.reference = reference
        n_clusters, k = check_positive_int(n_clusters, "n_clusters"), check_positive_int(k, "k")
        for name, value, high in ((("n_clusters", n_clusters, n_train),) if self.rule == "kmeans" else
                                  (("k", k, n_train),)):
            if value > high:
                raise InvalidArgument(f"`{name}` must be an integer in [1, n_train={high}], got {value!r}.")
        self.n_clusters, self.k, self.seed = int(n_clusters), int(k), int(seed)
        self.counts, self.contrast = example_counts(M, n_train), bool(contrast)
        self.rates, self._parts, self._train = None, [], None

    # ------------------------------------------------------------------ the reference representation
    def represent(self, encoder, x: torch.Tensor) -> torch.Tensor:
        """The reference representation (N, r) of inputs x, float64."""
        if isinstance(self.reference, str):
            return x.reshape(len(x), -1).double()
        net = encoder if self.reference is None else check_model(self.reference, x, name="reference")
        with torch.no_grad():
            return encode_chunks(net, x.to(net.device)).double().to(x.device)

    def _fit(self, encoder) -> dict:
        from sklearn.cluster import KMeans

        x_train = encoder.canonical(self.x_train).to(encoder.device)
        h = self.represent(encoder, x_train)
        fit = {"encoder": encoder, "h": h}
        if self.rule == "kmeans":
            km = KMeans(n_clusters=self.n_clusters, n_init=3, random_state=self.seed).fit(h.cpu().numpy())
            fit["centroids"] = torch.as_tensor(km.cluster_centers_, dtype=torch.float64, device=h.device)
            fit["labels"] = torch.cdist(h, fit["centroids"]).argmin(1)
        return fit

    def members(self, encoder, x: torch.Tensor) -> torch.Tensor:
        """Bool (N, n_train): training examples in each test example's pseudo-class or neighbourhood."""
        if self._train is None or self._train["encoder"] is not encoder:
            self._train = self._fit(encoder)
        h = self.represent(encoder, x)
        if self.rule == "kmeans":
            own = torch.cdist(h, self._train["centroids"]).argmin(1)
            return self._train["labels"][None, :] == own[:, None]
        nearest = torch.topk(-torch.cdist(h, self._train["h"]), self.k, dim=1).indices
        return torch.zeros(len(h), len(self._train["h"]), dtype=torch.bool, device=h.device).scatter_(1, nearest, True)

    # ------------------------------------------------------------------ Quantus
    def _validate_a(self, a_batch, x_batch):
        a = check_batch(as_tensor(a_batch, "a_batch"), "a_batch").cpu().numpy()
        if a.shape != (len(x_batch), len(self.x_train)):
            raise InvalidInput(f"`a_batch` must be the (n_test, n_train) = ({len(x_batch)}, {len(self.x_train)}) "
                               f"example-importance matrix, got shape {a.shape}.")
        return a

    def custom_preprocess(self, **kwargs):
        self._parts, self._train = [], None

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        encoder = self.torch_model(model)
        a = torch.as_tensor(np.asarray(a_batch), dtype=torch.float32)
        if not bool(torch.isfinite(a).all()):
            raise InvalidInput("The example-importance matrix contains NaN/inf.")
        x = as_tensor(x_batch, "x_batch", device=encoder.device)
        member = self.members(encoder, x).cpu()
        top, bottom = membership_rates(a, member, self.counts)
        self._parts.append((top.numpy(), bottom.numpy()))
        return (top.mean(1) - (bottom.mean(1) if self.contrast else 0)).numpy()

    def custom_postprocess(self, **kwargs):
        if self._parts:
            self.rates = {"M": self.counts, "top": np.concatenate([p[0] for p in self._parts]),
                          "bottom": np.concatenate([p[1] for p in self._parts])}

    def curve(self) -> Curve:
        """The last call's top-M and bottom-M rates over M (SimilarityRate's curve, with pseudo-classes)."""
        return Curve(x=self.rates["M"], series={"top": self.rates["top"], "bottom": self.rates["bottom"]})


__all__ = ["LabelFreeSimilarityRate", "RULES"]
