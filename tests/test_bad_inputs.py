"""Bad inputs across the public entry points: each case asserts the lfeval exception class and that the
message names the argument (or the fix); a few assert the documented correct result instead.

Every case is ``(id, call, exception, pattern)`` where ``call(c)`` gets the shared objects below.
"""

from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval.cli import main
from lfeval.errors import (
    DatasetUnavailable,
    InvalidArgument,
    InvalidInput,
    LabelsRequired,
    ModelStateError,
    NotAdaptable,
    UnknownName,
)
from lfeval.examples import importance
from lfeval.explain.base import get_explainer
from lfeval.meta import (
    LabelFreeMetaEvaluation,
    LatentInputPerturbationTest,
    LatentModelPerturbationTest,
    benchmark,
    default_test_suite,
)
from lfeval.metrics import LabelFree, PretextCorrelation, RepresentationShift, SimilarityRate, UnitSaliencyCorrelation


class Tuple(nn.Module):
    def forward(self, x):
        return x.flatten(1), x


class Scalar(nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1)


class Maps(nn.Module):
    def forward(self, x):
        return x.repeat(1, 2, 1, 1)


@pytest.fixture(scope="module")
def c(digits, encoders, tmp_path_factory):
    """The shared objects of the cases."""
    ae = encoders["reconstruction"]
    x = digits.x_test[:8].numpy()
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    inf = x.copy()
    inf[1, 0, 2, 2] = np.inf
    train_mode = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))  # nn modules start in train mode
    tiny = lfeval.data.Dataset("tiny", digits.x_train[:2], digits.y_train[:2], digits.x_test[:2], digits.y_test[:2],
                               digits.baseline, "image")
    one_class = lfeval.data.Dataset("one", digits.x_train[:50], torch.zeros(50, dtype=torch.long), digits.x_test[:5],
                                    digits.y_test[:5], digits.baseline, "image")
    nan_ds = lfeval.data.Dataset("nan", torch.full((20, 1, 8, 8), float("nan")), digits.y_train[:20],
                                 digits.x_test[:5], digits.y_test[:5], digits.baseline, "image")
    a = lfeval.explain(ae, x, method="Saliency")
    return SimpleNamespace(
        ds=digits, ae=ae, enc=encoders, x=x, nan=nan, inf=inf, a=a, y=digits.y_test[:8].numpy(),
        x_tr=digits.x_train[:60], y_tr=digits.y_train[:60], train_mode=train_mode, tiny=tiny, one_class=one_class,
        nan_ds=nan_ds, tmp=tmp_path_factory.mktemp("bad"), plain=nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(),
        tuple=Tuple().eval(), scalar=Scalar().eval(), maps=Maps().eval(),
    )


def _explain(c, **kw):
    return lfeval.explain(**{"model": c.ae, "inputs": c.x, "method": "Saliency", **kw})


def _rs(c, metric=None, **kw):
    return (metric or RepresentationShift())(**{"model": c.ae, "x_batch": c.x, "a_batch": c.a, **kw})


def _sr(c, metric=None, **kw):
    matrix = importance(c.ae, c.x_tr, c.x, "cosine").numpy()
    return (metric or SimilarityRate(c.y_tr.numpy()))(**{"model": c.ae, "x_batch": c.x, "y_batch": c.y,
                                                         "a_batch": matrix, **kw})


def _lfsr(**kw):
    """A LabelFreeSimilarityRate over 4 blank training images (2 clusters)."""
    return lfeval.metrics.LabelFreeSimilarityRate(np.zeros((4, 1, 2, 2)), n_clusters=2, **kw)


def _lf(c, metric=None, **kw):
    return (metric or LabelFree(quantus.PixelFlipping(features_in_step=16, disable_warnings=True)))(
        **{"model": c.ae, "x_batch": c.x, "a_batch": c.a, **kw})


def _meta(c, estimator=None, methods=None, **kw):
    meta = LabelFreeMetaEvaluation(default_test_suite(), methods or {"Saliency": {}, "Random": {}}, iterations=1,
                                   nr_perturbations=1, display_progressbar=False)
    return meta(estimator or RepresentationShift(fractions=(0.5, 1.0)), **{"model": c.ae, "x_batch": c.x, **kw})


def _with_env(key, value, call):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        return call()
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def _train(c, ds=None, **kw):
    return lfeval.models.train_encoder(ds or c.ds, **{"epochs": 1, "display_progressbar": False, **kw})


CASES = [
    # ------------------------------------------------------------------ lfeval.data.load
    ("load/unknown", lambda c: lfeval.data.load("digts"), UnknownName, "Did you mean 'digits'"),
    ("load/not-a-name", lambda c: lfeval.data.load(3), InvalidArgument, "`name`"),
    ("load/mnist-offline", lambda c: lfeval.data.load("mnist", root=c.tmp / "none"), DatasetUnavailable, "MNIST"),
    ("load/cifar-no-root", lambda c: lfeval.data.load("cifar10"), DatasetUnavailable, "cifar-10-batches-py"),
    ("load/fashion-offline", lambda c: lfeval.data.load("fashion-mnist", root=c.tmp), DatasetUnavailable, "Fashion"),
    ("load/ecg-offline", lambda c: lfeval.data.load("ecg5000", root=c.tmp), DatasetUnavailable, "ECG5000_TRAIN"),
    ("load/medmnist-flag", lambda c: lfeval.data.load("medmnist:dermamnsit", root=c.tmp), UnknownName,
     "dermamnist"),
    ("load/medmnist-multilabel", lambda c: lfeval.data.load("medmnist:chestmnist", root=c.tmp), InvalidArgument,
     "multi-label"),
    ("load/medmnist-offline", lambda c: lfeval.data.load("medmnist:dermamnist", root=c.tmp), DatasetUnavailable,
     "dermamnist.npz"),
    ("load/digits-size", lambda c: lfeval.data.load("digits", size=4), InvalidArgument, "`size`"),
    ("load/digits-test-size", lambda c: lfeval.data.load("digits", test_size=1.5), InvalidArgument, "`test_size`"),
    ("load/cancer-test-size", lambda c: lfeval.data.load("breast_cancer", test_size=0.0), InvalidArgument,
     "`test_size`"),
    ("load/unknown-option", lambda c: lfeval.data.load("digits", sise=28), UnknownName, "Did you mean 'size'"),
    ("load/seed", lambda c: lfeval.data.load("digits", seed=-1), InvalidArgument, "`seed`"),
    ("load/root-type", lambda c: lfeval.data.load("mnist", root=3), InvalidArgument, "`root`"),
    ("load/text-corpus", lambda c: lfeval.data.load("text:rotten_tomatos"), UnknownName,
     "Did you mean 'rotten_tomatoes'"),
    ("load/text-no-member", lambda c: lfeval.data.load("text:"), InvalidArgument, "names no member"),
    ("load/text-root", lambda c: lfeval.data.load("text:rotten_tomatoes", root=c.tmp), DatasetUnavailable,
     "rotten_tomatoes_corpus.csv.bz2"),
    ("load/text-test-size", lambda c: lfeval.data.load("text:rotten_tomatoes", test_size=1.5), InvalidArgument,
     "`test_size`"),
    ("load/text-max-length", lambda c: lfeval.data.load("text:rotten_tomatoes", max_length=2), InvalidArgument,
     "`max_length`"),
    ("load/text-tokenizer", lambda c: lfeval.data.load("text:rotten_tomatoes", tokenizer="bert"), UnknownName,
     "all-MiniLM-L6-v2"),
    ("load/text-baseline", lambda c: lfeval.data.load("text:rotten_tomatoes", baseline="blank"), UnknownName,
     "'delete'"),
    ("load/text-n-texts", lambda c: lfeval.data.load("text:rotten_tomatoes", n_texts=3), InvalidArgument,
     "`n_texts`"),
    ("text/tokenize-texts", lambda c: lfeval.text.tokenize("one string"), InvalidArgument, "`texts`"),
    ("text/tokenize-max-length", lambda c: lfeval.text.tokenize(["a b"], max_length=1000), InvalidArgument,
     "`max_length`"),
    ("text/minilm-baseline", lambda c: lfeval.text.minilm_encoder(baseline="blank"), InvalidArgument, "`baseline`"),
    ("text/minilm-device", lambda c: lfeval.text.minilm_encoder(device="mps"), InvalidArgument, "`device`"),
    ("text/modality-baseline", lambda c: lfeval.modalities.Text(baseline="pad"), InvalidArgument, "`baseline`"),
    ("text/not-token-module", lambda c: lfeval.explain(lfeval.as_encoder(nn.Flatten().eval(), modality="text",
                                                                         input_shape=(2, 4)),
                                                       np.ones((1, 2, 4), np.float32), method="Saliency"),
     InvalidArgument, "TokenModule"),
    ("meta/suite-modality", lambda c: default_test_suite(modality="txt"), UnknownName, "Did you mean 'text'"),
    # ------------------------------------------------------------------ train_encoder
    ("train/not-a-dataset", lambda c: lfeval.models.train_encoder(c.x), InvalidArgument, "lfeval.data.Dataset"),
    ("train/pretext", lambda c: _train(c, pretext="denoise"), UnknownName, "Did you mean 'denoising'"),
    ("train/latent-zero", lambda c: _train(c, latent_dim=0), InvalidArgument, "`latent_dim`"),
    ("train/latent-float", lambda c: _train(c, latent_dim=2.5), InvalidArgument, "`latent_dim`"),
    ("train/latent-bool", lambda c: _train(c, latent_dim=True), InvalidArgument, "`latent_dim`"),
    ("train/lr-schedule", lambda c: _train(c, lr_schedule="cosin"), UnknownName, "Did you mean 'cosine'"),
    ("train/lr-schedule-type", lambda c: _train(c, lr_schedule=1), InvalidArgument, "lr_schedule"),
    ("train/cuda-graph-cpu", lambda c: _train(c, cuda_graph=True), InvalidArgument, "needs device='cuda'"),
    ("train/cuda-graph-type", lambda c: _train(c, cuda_graph="yes"), InvalidArgument,
     "`cuda_graph` must be True or False"),
    ("train/ensemble-cuda-graph-cpu", lambda c: lfeval.models.train_ensemble(
        c.ds, [{"pretext": "reconstruction", "seed": 0}], epochs=1, cuda_graph=True, display_progressbar=False),
     InvalidArgument, "needs device='cuda'"),
    ("train/epochs", lambda c: _train(c, epochs=0), InvalidArgument, "`epochs`"),
    ("train/batch-size", lambda c: _train(c, batch_size=0), InvalidArgument, "`batch_size`"),
    ("train/contrastive-batch-1", lambda c: _train(c, pretext="contrastive", batch_size=1), InvalidArgument,
     "`batch_size` must be an integer >= 2"),
    ("train/patience", lambda c: _train(c, patience=0), InvalidArgument, "`patience`"),
    ("train/checkpoints", lambda c: _train(c, checkpoints=-1), InvalidArgument, "`checkpoints`"),
    ("train/seed", lambda c: _train(c, seed=-3), InvalidArgument, "`seed`"),
    ("train/lr-zero", lambda c: _train(c, lr=0.0), InvalidArgument, "`lr`"),
    ("train/lr-nan", lambda c: _train(c, lr=float("nan")), InvalidArgument, "`lr`"),
    ("train/weight-decay", lambda c: _train(c, weight_decay=-1.0), InvalidArgument, "`weight_decay`"),
    ("train/val-fraction", lambda c: _train(c, val_fraction=0.7), InvalidArgument, "`val_fraction`"),
    ("train/cuda", lambda c: _train(c, device="cuda"), InvalidArgument, "no usable CUDA"),
    ("train/device-name", lambda c: _train(c, device="gpu0"), InvalidArgument, "`device`"),
    ("train/nan-data", lambda c: _train(c, ds=c.nan_ds), InvalidInput, "NaN"),
    ("train/two-samples", lambda c: _train(c, ds=c.tiny), InvalidInput, "fewer than 2 remain"),
    ("train/one-class", lambda c: _train(c, ds=c.one_class, pretext="classification"), InvalidInput,
     "at least 2 classes"),
    ("train/task-option", lambda c: _train(c, pretext="reconstruction", sigma=0.3), InvalidArgument,
     "no option 'sigma'"),
    ("train/cache-dir-file", lambda c: _train(c, cache_dir=__file__), InvalidArgument, "`cache_dir`"),
    ("train/threads-zero", lambda c: _train(c, threads=0), InvalidArgument, "`threads` must be 'auto' or a positive"),
    ("train/threads-name", lambda c: _train(c, threads="max"), InvalidArgument, "`threads`"),
    ("train/threads-bool", lambda c: _train(c, threads=True), InvalidArgument, "`threads`"),
    # ------------------------------------------------------------------ lfeval.threads
    ("threads/limit-zero", lambda c: lfeval.threads.limit(0).__enter__(), InvalidArgument, "`threads`"),
    ("threads/limit-float", lambda c: lfeval.threads.choose(1.5), InvalidArgument, "`threads`"),
    ("threads/work-negative", lambda c: lfeval.threads.choose("auto", work=-1.0), InvalidArgument, "`work`"),
    ("threads/work-nan", lambda c: lfeval.threads.choose("auto", work=float("nan")), InvalidArgument, "`work`"),
    ("threads/env", lambda c: _with_env("LFEVAL_THREADS", "two", lambda: lfeval.threads.choose()), InvalidArgument,
     "`LFEVAL_THREADS` must be 'auto' or a positive integer"),
    ("threads/env-zero", lambda c: _with_env("LFEVAL_THREADS", "0", lambda: _train(c)), InvalidArgument,
     "`LFEVAL_THREADS`"),
    # ------------------------------------------------------------------ lfeval.explain
    ("explain/not-a-module", lambda c: _explain(c, model=lambda x: x), InvalidArgument, "torch.nn.Module"),
    ("explain/train-mode", lambda c: _explain(c, model=c.train_mode), ModelStateError, r"\.eval\(\)"),
    ("explain/strings", lambda c: _explain(c, inputs=np.array([["a", "b"]])), InvalidInput, "`inputs`"),
    ("explain/dict", lambda c: _explain(c, inputs={"x": 1}), InvalidInput, "`inputs`"),
    ("explain/empty", lambda c: _explain(c, inputs=c.x[:0]), InvalidInput, "empty batch"),
    ("explain/nan", lambda c: _explain(c, inputs=c.nan), InvalidInput, "NaN"),
    ("explain/inf", lambda c: _explain(c, inputs=c.inf), InvalidInput, "NaN/inf"),
    ("explain/one-dim", lambda c: _explain(c, inputs=np.zeros(5)), InvalidInput, "at least 2 dimensions"),
    ("explain/shape", lambda c: _explain(c, inputs=np.zeros((2, 1, 4, 4))), InvalidInput, "encoder takes"),
    ("explain/complex", lambda c: _explain(c, inputs=np.zeros((2, 1, 8, 8), dtype=complex)), InvalidInput,
     "real numbers"),
    ("explain/method", lambda c: _explain(c, method="IntegratedGradient"), UnknownName,
     "Did you mean 'IntegratedGradients'"),
    ("explain/batch-size-0", lambda c: _explain(c, batch_size=0), InvalidArgument, "`batch_size`"),
    ("explain/batch-size-float", lambda c: _explain(c, batch_size=2.5), InvalidArgument, "`batch_size`"),
    ("explain/seed", lambda c: _explain(c, method="GradientShap", seed=-1), InvalidArgument, "`seed`"),
    ("explain/option", lambda c: _explain(c, method="IntegratedGradients", n_step=4), InvalidArgument,
     "Did you mean 'n_steps'"),
    ("explain/gradshap-n-samples", lambda c: _explain(c, method="GradientShap", n_samples=0), InvalidArgument,
     "`n_samples`"),
    ("explain/smoothgrad-stdevs", lambda c: _explain(c, method="SmoothGrad", stdevs=-0.1), InvalidArgument,
     "`stdevs`"),
    ("explain/baseline-shape", lambda c: _explain(c, method="IntegratedGradients", baseline=torch.zeros(3, 3)),
     InvalidArgument, "`baseline`"),
    ("explain/baselines-shape", lambda c: _explain(c, method="GradientShap", baselines=torch.zeros(2, 5)),
     InvalidArgument, "`baselines`"),
    ("explain/tuple-output", lambda c: _explain(c, model=c.tuple), InvalidArgument, "returned a tuple"),
    ("explain/scalar-output", lambda c: _explain(c, model=c.scalar), InvalidArgument, r"\(N, d\)"),
    ("explain/map-output", lambda c: _explain(c, model=c.maps), InvalidArgument, "Flatten or pool"),
    ("explain/module-fails", lambda c: _explain(c, model=nn.Linear(5, 2).eval()), InvalidInput,
     "failed on inputs of shape"),
    ("explain/cem-option", lambda c: _explain(c, method="CEM-PP", kapa=0.1), InvalidArgument, "Did you mean 'kappa'"),
    ("explain/cem-clip", lambda c: _explain(c, method="CEM-PP", clip=(1.0, 0.0)), InvalidArgument, "`clip`"),
    ("explain/cem-range", lambda c: _explain(c, method="CEM-PN", inputs=c.x * 3, x_train=c.x_tr), InvalidInput,
     "clip range"),
    # ------------------------------------------------------------------ explain_units
    ("units/scalar-output", lambda c: lfeval.explain_units(c.scalar, c.x), InvalidArgument, r"\(N, d\)"),
    ("units/method", lambda c: lfeval.explain_units(c.ae, c.x, method="Salency"), UnknownName, "Saliency"),
    ("units/cem", lambda c: lfeval.explain_units(c.ae, c.x, method="CEM-PP"), InvalidArgument, "latent unit"),
    ("units/train-mode", lambda c: lfeval.explain_units(c.train_mode, c.x), ModelStateError, "train mode"),
    ("units/empty", lambda c: lfeval.explain_units(c.ae, c.x[:0]), InvalidInput, "empty"),
    # ------------------------------------------------------------------ example importance
    ("examples/method", lambda c: importance(c.ae, c.x_tr, c.x, "dkn"), UnknownName, "'dknn'"),
    ("examples/shapes", lambda c: importance(c.ae, c.x_tr, np.zeros((3, 1, 4, 4)), "cosine"), InvalidInput,
     "`x_test`"),
    ("examples/empty-train", lambda c: importance(c.ae, c.x_tr[:0], c.x, "cosine"), InvalidInput, "`x_train`"),
    ("examples/nan-test", lambda c: importance(c.ae, c.x_tr, c.nan, "dknn"), InvalidInput, "`x_test`"),
    ("examples/train-mode", lambda c: importance(c.train_mode, c.x_tr, c.x, "cosine"), ModelStateError, "encoder"),
    ("examples/not-a-module", lambda c: importance("ae", c.x_tr, c.x, "cosine"), InvalidArgument, "`encoder`"),
    ("examples/knn-k0", lambda c: importance(c.ae, c.x_tr, c.x, "dknn", kind="knn", k=0), InvalidArgument, "`k`"),
    ("examples/knn-k-large", lambda c: importance(c.ae, c.x_tr, c.x, "dknn", kind="knn", k=61), InvalidArgument,
     "n_train=60"),
    ("examples/dknn-kind", lambda c: importance(c.ae, c.x_tr, c.x, "dknn", kind="nearest"), UnknownName,
     "DkNN kind"),
    ("examples/dknn-eps", lambda c: importance(c.ae, c.x_tr, c.x, "dknn", eps=0.0), InvalidArgument, "`eps`"),
    ("examples/simplex-steps", lambda c: importance(c.ae, c.x_tr, c.x, "simplex", n_steps=0), InvalidArgument,
     "`n_steps`"),
    ("examples/simplex-lr", lambda c: importance(c.ae, c.x_tr, c.x, "simplex", lr=-1.0), InvalidArgument, "`lr`"),
    ("examples/batch-size", lambda c: importance(c.ae, c.x_tr, c.x, "cosine", batch_size=0), InvalidArgument,
     "`batch_size`"),
    ("examples/tracin-plain", lambda c: importance(c.plain, c.x_tr, c.x, "tracin"), InvalidArgument,
     "pretext_model"),
    ("examples/tracin-no-checkpoints", lambda c: importance(c.ae.replace(checkpoints=[]), c.x_tr, c.x, "tracin"),
     InvalidArgument, "checkpoints=K"),
    ("examples/influence-solver", lambda c: importance(c.ae, c.x_tr, c.x, "influence", solver="cg"), UnknownName,
     "influence solver"),
    ("examples/influence-params", lambda c: importance(c.ae, c.x_tr, c.x, "influence", params="first"), UnknownName,
     "influence params"),
    ("examples/influence-damping", lambda c: importance(c.ae, c.x_tr, c.x, "influence", damping=-1.0),
     InvalidArgument, "`damping`"),
    ("examples/influence-depth", lambda c: importance(c.ae, c.x_tr, c.x, "influence", solver="lissa", depth=0),
     InvalidArgument, "`depth`"),
    ("examples/tracin-algorithm", lambda c: importance(c.ae, c.x_tr, c.x, "tracin", algorithm="ghost"), UnknownName,
     "TracIn algorithm"),
    ("examples/tracin-ghost", lambda c: importance(c.ae, c.x_tr, c.x, "tracin", ghost="yes"), InvalidArgument,
     "`ghost`"),
    ("examples/tracin-projection", lambda c: importance(c.ae, c.x_tr, c.x, "tracin", projection=0), InvalidArgument,
     "`projection`"),
    ("examples/tracin-max-memory", lambda c: importance(c.ae, c.x_tr, c.x, "tracin", max_memory=-1),
     InvalidArgument, "`max_memory`"),
    ("examples/chunk-size", lambda c: importance(c.ae, c.x_tr, c.x, "tracin", chunk_size=0), InvalidArgument,
     "`chunk_size`"),
    # ------------------------------------------------------------------ lfeval.memory
    ("memory/feature-budget-device", lambda c: lfeval.memory.feature_budget("gpu0"), InvalidArgument,
     "`device` 'gpu0' is not a torch device"),
    ("memory/pass-budget-device", lambda c: lfeval.memory.pass_budget("gpu0"), InvalidArgument,
     "`device` 'gpu0' is not a torch device"),
    ("examples/y-train-length", lambda c: importance(c.enc["classification"], c.x_tr, c.x, "tracin",
                                                     y_train=c.y_tr[:5], y_test=c.y), InvalidInput, "`y_train`"),
    ("examples/no-labels", lambda c: importance(c.enc["classification"], c.x_tr, c.x, "influence"), InvalidArgument,
     "needs labels"),
    ("examples/explain-func-x-train", lambda c: lfeval.examples.explain_func(c.ae, c.x), InvalidArgument,
     "`x_train`"),
    # ------------------------------------------------------------------ RepresentationShift
    ("rs/fractions-empty", lambda c: RepresentationShift(fractions=[]), InvalidArgument, "`fractions`"),
    ("rs/fractions-one", lambda c: RepresentationShift(fractions=[0.5]), InvalidArgument, "`fractions`"),
    ("rs/fractions-order", lambda c: RepresentationShift(fractions=[0.5, 0.2]), InvalidArgument, "increasing"),
    ("rs/fractions-range", lambda c: RepresentationShift(fractions=[0.5, 1.5]), InvalidArgument, r"\(0, 1\]"),
    ("rs/fractions-zero", lambda c: RepresentationShift(fractions=[0.0, 0.5]), InvalidArgument, "`fractions`"),
    ("rs/fractions-text", lambda c: RepresentationShift(fractions=["a", "b"]), InvalidArgument, "`fractions`"),
    ("rs/distance", lambda c: RepresentationShift(distance="l1"), InvalidArgument, "`distance`"),
    ("rs/n-random", lambda c: RepresentationShift(n_random=0), InvalidArgument, "`n_random`"),
    ("rs/chunk-size", lambda c: RepresentationShift(chunk_size=1.5), InvalidArgument, "`chunk_size`"),
    ("rs/seed", lambda c: RepresentationShift(seed=-2), InvalidArgument, "`seed`"),
    ("rs/a-shape", lambda c: _rs(c, a_batch=c.a[:, :, :4]), InvalidInput, "`a_batch`"),
    ("rs/a-count", lambda c: _rs(c, a_batch=c.a[:3]), InvalidInput, "`a_batch`"),
    ("rs/a-nan", lambda c: _rs(c, a_batch=c.nan), InvalidInput, "`a_batch`"),
    ("rs/x-nan", lambda c: _rs(c, x_batch=c.nan), InvalidInput, "`x_batch`"),
    ("rs/x-empty", lambda c: _rs(c, x_batch=c.x[:0], a_batch=c.a[:0]), InvalidInput, "empty"),
    ("rs/no-attributions", lambda c: _rs(c, a_batch=None), InvalidArgument, "explain_func"),
    ("rs/batch-size", lambda c: _rs(c, batch_size=0), InvalidArgument, "`batch_size`"),
    ("rs/train-mode", lambda c: _rs(c, model=c.train_mode), ModelStateError, "train mode"),
    ("rs/y-length", lambda c: _rs(c, y_batch=c.y[:3]), InvalidInput, "`y_batch`"),
    ("rs/baseline-shape", lambda c: _rs(c, metric=RepresentationShift(baseline=torch.zeros(2, 2))), InvalidArgument,
     "`baseline`"),
    # ------------------------------------------------------------------ SimilarityRate
    ("sr/y-train-none", lambda c: SimilarityRate(None), InvalidArgument, "`y_train`"),
    ("sr/y-train-2d", lambda c: SimilarityRate(np.zeros((3, 2))), InvalidInput, "`y_train`"),
    ("sr/y-train-float", lambda c: SimilarityRate([0.5, 1.0]), InvalidInput, "integer class labels"),
    ("sr/y-train-empty", lambda c: SimilarityRate([]), InvalidInput, "`y_train`"),
    ("sr/M-fraction-count", lambda c: SimilarityRate([0, 1, 1], M=1.5), InvalidArgument, "non-integer count"),
    ("sr/M-zero", lambda c: SimilarityRate([0, 1, 1], M=[0, 1]), InvalidArgument, "`M`"),
    ("sr/M-text", lambda c: SimilarityRate([0, 1, 1], M="all"), InvalidArgument, "`M`"),
    ("sr/M-too-many", lambda c: SimilarityRate([0, 1, 1], M=[5]), InvalidArgument, "n_train=3"),
    ("lfsr/M-fraction-count", lambda c: _lfsr(M=[0.5, 2.5]), InvalidArgument, "non-integer count"),
    ("lfsr/M-text", lambda c: _lfsr(M="all"), InvalidArgument, "`M`"),
    ("sr/no-labels", lambda c: _sr(c, y_batch=None), LabelsRequired, "`y_batch`"),
    ("sr/y-length", lambda c: _sr(c, y_batch=c.y[:3]), InvalidInput, "`y_batch`"),
    ("sr/y-float", lambda c: _sr(c, y_batch=c.y + 0.5), InvalidInput, "`y_batch`"),
    ("sr/a-shape", lambda c: _sr(c, a_batch=np.zeros((8, 5))), InvalidInput, r"\(n_test, n_train\)"),
    ("sr/a-nan", lambda c: _sr(c, a_batch=np.full((8, 60), np.nan)), InvalidInput, "NaN"),
    # ------------------------------------------------------------------ PretextCorrelation, UnitSaliency
    ("pc/no-references", lambda c: PretextCorrelation({}), InvalidArgument, "reference encoders"),
    ("pc/not-modules", lambda c: PretextCorrelation(["ae"]), InvalidArgument, "references"),
    ("pc/train-mode-reference", lambda c: PretextCorrelation([c.train_mode]), ModelStateError, "references"),
    ("pc/correlation", lambda c: PretextCorrelation([c.ae], correlation="kendall"), UnknownName, "correlation"),
    ("pc/explanations", lambda c: PretextCorrelation([c.ae], explanations="maps"), UnknownName, "explanations"),
    ("pc/reference-shape", lambda c: PretextCorrelation([lfeval.Encoder(nn.Flatten(), input_shape=(1, 4, 4)).eval()])(
        model=c.ae, x_batch=c.x, a_batch=c.a, explain_func=lfeval.explain), InvalidInput, "input shapes|expect"),
    ("units-metric/method", lambda c: UnitSaliencyCorrelation(method="Salency"), UnknownName, "Saliency"),
    ("units-metric/share", lambda c: UnitSaliencyCorrelation(active_share=0.0), InvalidArgument, "`active_share`"),
    ("units-metric/one-unit", lambda c: UnitSaliencyCorrelation()(
        model=nn.Sequential(nn.Flatten(), nn.Linear(64, 1)).eval(), x_batch=c.x), InvalidArgument, ">= 2 units"),
    # ------------------------------------------------------------------ LabelFree adapter
    ("lf/not-adaptable", lambda c: LabelFree(quantus.Sparseness()), NotAdaptable, "Sparseness"),
    ("lf/similarity", lambda c: LabelFree(quantus.PixelFlipping(), similarity="dot"), UnknownName, "similarity"),
    ("lf/ill-defined", lambda c: LabelFree(quantus.IROF(), similarity="negative_distance"), InvalidArgument,
     "ill-defined"),
    ("lf/baseline", lambda c: LabelFree(quantus.PixelFlipping(), baseline="blur"), UnknownName, "LabelFree baseline"),
    ("lf/road-one-sample", lambda c: _lf(c, metric=LabelFree(quantus.ROAD(disable_warnings=True)), x_batch=c.x[:1],
                                         a_batch=c.a[:1]), InvalidInput, "at least 2 samples"),
    ("lf/not-a-module", lambda c: _lf(c, model="encoder"), InvalidArgument, "torch.nn.Module"),
    ("lf/x-nan", lambda c: _lf(c, x_batch=c.nan), InvalidInput, "`x_batch`"),
    ("lf/a-count", lambda c: _lf(c, a_batch=c.a[:2]), InvalidArgument, "a_batch"),
    ("lf/masks", lambda c: _lf(c, metric=LabelFree(quantus.PointingGame())), InvalidArgument, "s_batch"),
    ("lf/batch-size", lambda c: _lf(c, batch_size=0), InvalidArgument, "`batch_size`"),
    # ------------------------------------------------------------------ meta-evaluation
    ("meta/empty-suite", lambda c: LabelFreeMetaEvaluation({}, {"Saliency": {}, "Random": {}}), InvalidArgument,
     "test_suite"),
    ("meta/test-name", lambda c: LabelFreeMetaEvaluation({"Model Resilience": None}, {"a": {}, "b": {}}),
     UnknownName, "Model Resilience Test"),
    ("meta/iterations", lambda c: LabelFreeMetaEvaluation(default_test_suite(), {"a": {}, "b": {}}, iterations=0),
     InvalidArgument, "`iterations`"),
    ("meta/perturbations", lambda c: LabelFreeMetaEvaluation(default_test_suite(), {"a": {}, "b": {}},
                                                             nr_perturbations=0), InvalidArgument,
     "`nr_perturbations`"),
    ("meta/one-method", lambda c: _meta(c, methods={"Saliency": {}}), InvalidArgument, "at least two methods"),
    ("meta/methods-type", lambda c: LabelFreeMetaEvaluation(default_test_suite(), ["Saliency", "Random"]),
     InvalidArgument, "`xai_methods`"),
    ("meta/method-kwargs", lambda c: LabelFreeMetaEvaluation(default_test_suite(), {"a": 1, "b": {}}),
     InvalidArgument, r"xai_methods\['a'\]"),
    ("meta/direction", lambda c: _meta(c, score_direction="up"), InvalidArgument, "`score_direction`"),
    ("meta/labels-both", lambda c: _meta(c, y_batch=c.y, score_labels=c.y), InvalidArgument, "score_labels"),
    ("meta/labels-shape", lambda c: _meta(c, score_labels=c.y[:3]), InvalidArgument, "`score_labels`"),
    ("meta/one-sample", lambda c: _meta(c, x_batch=c.x[:1]), InvalidInput, "at least 2"),
    ("meta/train-mode", lambda c: _meta(c, model=c.train_mode), ModelStateError, "train mode"),
    ("meta/x-nan", lambda c: _meta(c, x_batch=c.nan), InvalidInput, "NaN"),
    ("meta-test/type", lambda c: LatentModelPerturbationTest("Robustness"), UnknownName, "Resilience"),
    ("meta-test/keep", lambda c: LatentInputPerturbationTest(keep="l2"), UnknownName, "keep rule"),
    ("meta-test/threshold", lambda c: LatentInputPerturbationTest(threshold=1.5), InvalidArgument, "`threshold`"),
    ("meta-test/knn-bank", lambda c: LatentInputPerturbationTest(keep="knn"), InvalidArgument, "`bank`"),
    ("meta-test/bank-shape", lambda c: LatentInputPerturbationTest(keep="knn", bank=np.zeros(5)), InvalidInput,
     "`bank`"),
    ("meta-test/std", lambda c: LatentModelPerturbationTest(std=-0.1), InvalidArgument, "`std`"),
    ("meta-test/noise", lambda c: LatentInputPerturbationTest(noise=0.0), InvalidArgument, "`noise`"),
    ("meta-test/noise-type", lambda c: LatentModelPerturbationTest(noise_type="gaussian"), UnknownName,
     "noise_type"),
    ("meta-test/k", lambda c: LatentInputPerturbationTest(keep="knn", bank=np.zeros((5, 2)), k=0), InvalidArgument,
     "`k`"),
    # ------------------------------------------------------------------ lfeval.evaluate and benchmark
    ("evaluate/no-metrics", lambda c: lfeval.evaluate({}, {"Saliency": {}}, c.ae, c.x), InvalidArgument,
     "`metrics`"),
    ("evaluate/no-methods", lambda c: lfeval.evaluate({"RS": RepresentationShift()}, {}, c.ae, c.x),
     InvalidArgument, "`xai_methods`"),
    ("evaluate/needs-labels", lambda c: lfeval.evaluate({"PF": quantus.PixelFlipping()}, {"Saliency": {}}, c.ae,
                                                        c.x), LabelsRequired, "LabelFree"),
    ("evaluate/needs-masks", lambda c: lfeval.evaluate({"PG": quantus.PointingGame()}, {"Saliency": {}}, c.ae,
                                                       c.x), InvalidArgument, "s_batch"),
    ("evaluate/method-type", lambda c: lfeval.evaluate({"RS": RepresentationShift()}, {"Saliency": 3}, c.ae, c.x),
     InvalidArgument, r"xai_methods\['Saliency'\]"),
    ("evaluate/attribution-count", lambda c: lfeval.evaluate({"RS": RepresentationShift()}, {"IG": c.a[:2]}, c.ae,
                                                             c.x), InvalidInput, "2 samples"),
    ("evaluate/not-a-module", lambda c: lfeval.evaluate({"RS": RepresentationShift()}, {"Saliency": {}}, None, c.x),
     InvalidArgument, "torch.nn.Module"),
    ("evaluate/x-nan", lambda c: lfeval.evaluate({"RS": RepresentationShift()}, {"Saliency": {}}, c.ae, c.nan),
     InvalidInput, "`x_batch`"),
    ("benchmark/empty", lambda c: benchmark({}, {"RS": RepresentationShift()}, {"Saliency": {}}, c.tmp),
     InvalidArgument, "`grid`"),
    ("benchmark/cell", lambda c: benchmark({"digits": {"x": c.x}}, {"RS": RepresentationShift()}, {"a": {}}, c.tmp),
     InvalidArgument, r"grid\['digits'\]"),
    ("benchmark/out-dir-file", lambda c: benchmark({"d": {"x": c.x, "encoders": {"ae": c.ae}}},
                                                   {"RS": RepresentationShift()}, {"a": {}}, __file__),
     InvalidArgument, "`out_dir`"),
    ("benchmark/backend", lambda c: benchmark({"d": {"x": c.x, "encoders": {"ae": c.ae}}},
                                              {"RS": RepresentationShift()}, {"a": {}}, c.tmp, backend="rey"),
     UnknownName, "Did you mean 'ray'"),
    ("benchmark/address-serial", lambda c: benchmark({"d": {"x": c.x, "encoders": {"ae": c.ae}}},
                                                     {"RS": RepresentationShift()}, {"a": {}}, c.tmp,
                                                     address="127.0.0.1:6379"), InvalidArgument, "backend='ray'"),
    ("benchmark/address-type", lambda c: benchmark({"d": {"x": c.x, "encoders": {"ae": c.ae}}},
                                                   {"RS": RepresentationShift()}, {"a": {}}, c.tmp, backend="ray",
                                                   address=6379), InvalidArgument, "`address`"),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_raises_a_named_error(c, case):
    _, call, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        call(c)


# ---------------------------------------------------------------------- documented correct results
def test_batch_of_one_gives_the_batched_result(c):
    """A batch of one is valid everywhere it is meaningful, and gives each sample's value from a full batch."""
    for method in ("Saliency", "GradientShap", "Random"):
        np.testing.assert_allclose(lfeval.explain(c.ae, c.x[:1], method=method),
                                   lfeval.explain(c.ae, c.x, method=method)[:1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_rs(c, x_batch=c.x[:1], a_batch=c.a[:1]), _rs(c)[:1], rtol=1e-5)


def test_run_parameters_that_differ_from_the_old_defaults_plot(c, tmp_path, encoder_cache):
    """RepresentationShift fractions set in metric_params drive the curve plot (they used to crash it)."""
    from lfeval.config import RunConfig
    from lfeval.pipeline import run

    config = RunConfig(name="fractions", out_dir=str(tmp_path), pretexts=["reconstruction"], epochs=100,
                       latent_dim=8, checkpoints=3, cache_dir=str(encoder_cache), explainers=["Saliency", "Random"],
                       example_methods=[],
                       metrics=["RepresentationShift"], meta_metrics=[], n_explain=16, pretext_seeds=[0], quiet=True,
                       metric_params={"RepresentationShift": {"fractions": [0.25, 0.5, 1.0]}})
    run(config, log=lambda *a: None)
    assert (tmp_path / "fractions" / "plots" / "curves_RepresentationShift.png").is_file()


def test_planted_files_never_run_code(c, tmp_path, monkeypatch):
    """A pickle planted as a stage file or as cached weights is never executed: the stage is recomputed and
    the weights retrained; a planted CIFAR-10 batch is refused by the restricted unpickler."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # cached weights: torch.load(weights_only=True) refuses the payload, the encoder is trained again
    cache = tmp_path / "cache"
    enc = lfeval.models.train_encoder(c.ds, epochs=1, cache_dir=cache, display_progressbar=False)
    weights = next(cache.glob("*.pt"))
    torch.save({"state_dict": Payload()}, weights, _use_new_zipfile_serialization=True)
    with pytest.warns(UserWarning, match="cannot be used"):
        again = lfeval.models.train_encoder(c.ds, epochs=1, cache_dir=cache, display_progressbar=False)
    assert not marker.exists()
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values()))
    # a CIFAR-10 batch that is a code payload
    base = tmp_path / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / name).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InvalidInput, match="asks for io.open"):
        lfeval.data.load("cifar10", root=tmp_path / "cifar")
    assert not marker.exists()


def test_corrupted_and_planted_stage_files_are_recomputed(c, tmp_path, encoder_cache):
    """A stage file that fails its hash (changed, truncated, or replaced by a pickle) is named and recomputed;
    the rerun's tables equal the original's."""
    from lfeval.config import RunConfig
    from lfeval.pipeline import run

    config = RunConfig(name="r", out_dir=str(tmp_path), pretexts=["reconstruction"], epochs=100, latent_dim=8,
                       checkpoints=3, cache_dir=str(encoder_cache), explainers=["Saliency", "Random"],
                       example_methods=[], metrics=["RepresentationShift"], meta_metrics=[], n_explain=16,
                       pretext_seeds=[0], quiet=True)
    run(config, log=lambda *a: None)
    scores = (tmp_path / "r" / "scores.csv").read_bytes()
    stages = tmp_path / "r" / "stages"
    (stages / "attributions-reconstruction.json").write_bytes(pickle.dumps({"x": 1}))
    data = (stages / "scores-reconstruction.safetensors").read_bytes()
    (stages / "scores-reconstruction.safetensors").write_bytes(data[: len(data) // 2])
    logs = []
    run(config, log=logs.append)
    text = "\n".join(map(str, logs))
    assert "attributions-reconstruction.json fails its SHA-256 check" in text
    assert "scores-reconstruction.safetensors fails its SHA-256 check" in text
    assert (tmp_path / "r" / "scores.csv").read_bytes() == scores
    (stages / "manifest.json").write_text("{not json")
    logs.clear()
    run(config, log=logs.append)
    assert any("unreadable" in str(line) for line in logs) and (tmp_path / "r" / "scores.csv").read_bytes() == scores


def test_changed_data_is_detected_and_recomputed(c, tmp_path):
    """Stages stored for other data (its fingerprint) are recomputed, and the log says why."""
    from lfeval.pipeline.store import StageStore

    store = StageStore(tmp_path / "run", {"seed": 0}, fingerprint="aaaa", log=lambda *a: None)
    store.run("s", lambda: {"x": np.arange(3)})
    logs = []
    again = StageStore(tmp_path / "run", {"seed": 0}, fingerprint="bbbb", log=logs.append)
    calls = []
    again.run("s", lambda: calls.append(1) or {"x": np.arange(3)})
    assert calls == [1] and any("data (its fingerprint) changed: aaaa -> bbbb" in str(m) for m in logs)
    same = StageStore(tmp_path / "run", {"seed": 0}, fingerprint="bbbb", log=lambda *a: None)
    same.run("s", lambda: calls.append(2))
    assert calls == [1] and same.loaded == ["s"]


def test_run_folder_safety(tmp_path, capsys):
    """--fresh deletes only a folder lfeval created; names are one safe path component; foreign folders and
    unwritable outputs are refused with a clear error (rc 2)."""
    from lfeval.pipeline.store import StageStore, remove_run_dir

    out = tmp_path / "runs"
    precious = out / "notes"
    precious.mkdir(parents=True)
    (precious / "keep.txt").write_text("mine")
    (tmp_path / "beside.txt").write_text("mine too")
    unsafe = "safe folder name"
    for name, message in (("..", unsafe), ("", "Config `name` must be a non-empty str, got ''"), ("a/b", unsafe),
                          (".hidden", unsafe), ("x" * 101, unsafe)):
        code = main(["run", "--name", name, "--out", str(out), "--fresh", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (name, err)
    assert (precious / "keep.txt").exists() and (tmp_path / "beside.txt").exists()
    with pytest.raises(InvalidArgument, match="not a run folder lfeval created"):
        remove_run_dir(precious)
    with pytest.raises(InvalidArgument, match="did not write"):
        StageStore(precious, {"seed": 0})
    StageStore(out / "mine", {"seed": 0})
    assert remove_run_dir(out / "mine") and not (out / "mine").exists() and precious.exists()
    assert main(["run", "--out", str(tmp_path / "beside.txt" / "sub"), "--quiet"]) == 2
    assert "Cannot write the run folder" in capsys.readouterr().err


CONFIGS = [
    ('epochs = true', "`epochs` must be an integer"),
    ('quiet = "no"', "`quiet` must be true or false"),
    ('seed = -1', "`seed` must be an integer >= 0"),
    ('latent_dim = 0', "`latent_dim`"),
    ('n_explain = 1', "`n_explain`"),
    ('pretexts = "reconstruction"', "`pretexts` must be a list"),
    ('pretexts = ["reconstruction", "reconstruction"]', "names an entry twice"),
    ('pretexts = []', "`pretexts` and `encoders` are both empty"),
    ('pretext_seeds = [0.5]', "`pretext_seeds` must be a list of ints"),
    ('explainers = ["IntegratedGradient"]', "Did you mean 'IntegratedGradients'"),
    ('metrics = ["Sparsenes"]', "Did you mean 'Sparseness'"),
    ('data = "mnistt"', "Did you mean 'mnist'"),
    ("latnet_dim = 4", "Unknown config key 'latnet_dim'. Did you mean 'latent_dim'"),
    ('name = ".."', "safe folder name"),
    ('x = [1, 2', "not valid TOML"),
    ('epochs = 3\n[run]\nseed = 1', "outside its [run] table"),
    ('run = 3', "must be a table"),
    ('[explainer_params.IntegratedGradients]\nn_step = 4', "Did you mean 'n_steps'"),
    ('explainer_params = {{IntegratedGradients = 4}}', "must be a table of options"),
    ('[metric_params.FaithfulnessCorrelation]\nnr_run = 5', "Did you mean 'nr_runs'"),
    ('metric_params = {{RepresentationShift = [1]}}', "must be a table of parameters"),
    ('pretexts = ["reconstruction"]', "at least two `pretexts`"),
    ('explainers = ["Saliency"]', "at least two in `meta_explainers`"),
    ('plugins = ["no_such_file.py"]', "does not exist"),
    ('plugins = ["no_such_module_xyz"]', "Cannot import plugin module"),
    ('meta_pretext = "denoise"', "Did you mean 'denoising'"),
    ('backend = "dask"', "Unknown entry 'dask' in config `backend`"),
    ('backend = "rey"', "Did you mean 'ray'"),
    ('address = 6379', "`address` must be a non-empty str"),
    ('address = ""', "`address` must be a non-empty str"),
    ('address = "127.0.0.1:6379"', "needs backend='ray'"),
    ('data = "mnist"\ndata_root = "{root}"', "MNIST"),
    ('pretexts = "reconstruction"\n[encoders.mine]\nfactory = "torch.nn:Flatten"', "`pretexts` must be a list"),
    ('[encoders.mine]\nkwargs = {{}}', "needs exactly one of factory, torchscript, exported"),
    ('[encoders.mine]\nfactory = "torch.nn:Flatten"\ntorchscript = "a.pt"', "exactly one of"),
    ('[encoders.mine]\nfactory = "torch.nn"', "must be 'pkg.module:name'"),
    ('[encoders.mine]\nfactory = "no_such_pkg_xyz:f"', "cannot import 'no_such_pkg_xyz'"),
    ('[encoders.mine]\nfactory = "torch.nn:NoSuchThing"', "has no 'NoSuchThing'"),
    ('[encoders.mine]\nfactory = "torch.nn:Flatten"\nweights = "missing.safetensors"', "does not exist"),
    ('[encoders.mine]\ntorchscript = "missing.pt"', "`encoders.mine.torchscript`"),
    ('[encoders.mine]\nfactory = "torch.nn:Flatten"\nwieghts = "w.pt"', "Did you mean 'weights'"),
    ('[encoders.mine]\nfactory = "torch.nn:Flatten"\nloss = "l2"', "`encoders.mine.loss`"),
    ('[encoders.mine]\nfactory = "torch.nn:Flatten"\ncheckpoints = "ck.pt"', "must be a list"),
    ('[encoders.mine]\nfactory = "torch.nn:Flatten"\nnormalize = {{mean = [0.5]}}', "`encoders.mine.normalize`"),
    ('[encoders.mine]\ntorchscript = "{script}"\nweights = "{script}"', "kwargs and weights go with a factory"),
    ('[encoders.reconstruction]\nfactory = "torch.nn:Flatten"', "not a pretext task's"),
    ('[encoders."a/b"]\nfactory = "torch.nn:Flatten"', "must be a safe name"),
    ('device = "cuda"', "no usable CUDA"),
    ('cuda_graph = true', "needs a CUDA `device`, got device = 'cpu'"),
    ('cuda_graph = 1', "Config `cuda_graph` must be true or false, got 1"),
    ('device = "tpu"', "`device`"),
    ('data = "npz:{root}/none.npz"', "does not exist"),
    ('data = "npz:"', "names no member"),
    ('data = "csv:{table}"\n[data_options]\nlabel = "grup"', "Did you mean 'group'"),
    ('data = "csv:{table}"\n[data_options]\nlabels = "group"', "Did you mean 'label'"),
    ('lr = 0', "Config `lr` must be a finite number > 0, got 0"),
    ('lr = "fast"', "Config `lr` must be a finite number > 0"),
    ('lr = nan', "Config `lr` must be a finite number > 0"),
    ('batch_size = 0', "Config `batch_size` must be an integer >= 1"),
    ('batch_size = true', "Config `batch_size` must be an integer >= 1"),
    ('batch_size = 1', "cannot train the contrastive pretext"),
    ('lr_schedule = "cosin"', "Did you mean 'cosine'"),
    ('lr_schedule = 1', "`lr_schedule` must be a non-empty str"),
    ('threads = 0', "`threads` must be 'auto' or a positive integer"),
    ('threads = "all"', "`threads` must be 'auto' or a positive integer"),
    ('threads = true', "`threads` must be 'auto' or a positive integer"),
    ('threads = 1.5', "`threads` must be 'auto' or a positive integer"),
    ('data = "text:rotten_tomatoes"', "lfeval trains encoders of continuous inputs only"),
    ('data = "text:rotten_tomatoes"\npretexts = []\nmetrics = ["RepresentationShift", "ROAD"]\nmeta_metrics = []\n'
     '[encoders.m]\nfactory = "lfeval.text:minilm_encoder"', "metrics ['ROAD'] add noise"),
    ('data = "text:rotten_tomatoes"\npretexts = []\nmetrics = ["RepresentationShift"]\nmeta_metrics = []\n'
     'explainers = ["Random", "CEM-PN"]\n[encoders.m]\nfactory = "lfeval.text:minilm_encoder"',
     "explainers ['CEM-PN']"),
    ('pretexts = []\nmetrics = ["RepresentationShift"]\nmeta_metrics = []\n[encoders.m]\n'
     'factory = "lfeval.text:minilm_encoder"', "returned a text encoder, but the data are image"),
    ('data = "text:rotten_tomatoes"\npretexts = []\nmetrics = ["RepresentationShift"]\nmeta_metrics = []\n'
     '[data_options]\nn_texts = 20\n[encoders.m]\nfactory = "lfeval.text:minilm_encoder"\n'
     'normalize = {{mean = [0.5], std = [0.5]}}', "`encoders.m.normalize` rescales input values"),
]


@pytest.mark.parametrize("toml, message", CONFIGS, ids=[m for _, m in CONFIGS])
def test_bad_config_exits_2_with_a_named_error(tmp_path, capsys, toml, message):
    config = tmp_path / "bad.toml"
    (tmp_path / "t.csv").write_text("a,b,group\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(20)))
    (tmp_path / "s.pt").write_bytes(b"")
    config.write_text(toml.format(root=(tmp_path / "empty").as_posix(), table=(tmp_path / "t.csv").as_posix(),
                                  script=(tmp_path / "s.pt").as_posix()))
    code = main(["run", "--config", str(config), "--out", str(tmp_path / "runs")])  # no --quiet: it would win
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lfeval: error:") and message in err, err
    assert not (tmp_path / "runs").exists()  # caught before the first stage touched anything


def test_cli_missing_or_directory_config(tmp_path, capsys):
    for path in (tmp_path / "none.toml", tmp_path):
        assert main(["run", "--config", str(path), "--quiet"]) == 2
        assert "does not exist (or is not a file)" in capsys.readouterr().err


DEVICE_CONFIGS = [
    ('precision = "fast"', "Unknown entry 'fast' in config `precision`. Valid: highest, tf32, bf16"),
    ('precision = "tf-32"', "Did you mean 'tf32'"),
    ("precision = 1", "Config `precision` must be a non-empty str"),
    ("device = 3", "Config `device` must be a non-empty str"),
    ('device = "cuda:x"', "`device` 'cuda:x' is not a torch device"),
    ('device = "cuda:7"', "`device` 'cuda:7'"),  # no CUDA here, or no 8th GPU
]


@pytest.mark.parametrize("toml, message", DEVICE_CONFIGS, ids=[t for t, _ in DEVICE_CONFIGS])
def test_bad_device_or_precision_config_exits_2_with_a_named_error(tmp_path, capsys, toml, message):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    code = main(["run", "--config", str(config), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lfeval: error:") and message in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, message", [
    (["--precision", "fast"], "Valid: highest, tf32, bf16"),
    (["--device", "nonsense"], "`device` 'nonsense' is not a torch device"),
    (["--device", ""], "Config `device` must be a non-empty str"),
])
def test_bad_device_or_precision_flag_exits_2_with_a_named_error(tmp_path, capsys, flags, message):
    assert main(["run", "--out", str(tmp_path / "runs"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfeval: error:") and message in err, err
    assert not (tmp_path / "runs").exists()


def test_diagnostics_bad_inputs(ae, digits):
    """lfeval.diagnostics: nothing to compare, a plain module, an unknown path name."""
    from lfeval import diagnostics

    with pytest.raises(InvalidArgument, match="Pass `device`, `dtype` or `inputs`"):
        diagnostics.compare_placements(ae, digits)
    with pytest.raises(InvalidArgument, match="needs an lfeval.Encoder"):
        diagnostics.compare_placements(torch.nn.Flatten().eval(), digits, dtype=torch.float64)
    with pytest.raises(UnknownName, match="Did you mean 'Saliency'"):
        diagnostics.run_paths(ae, digits, paths=["Salincy"])


# ====================================================================== issue 28: the last raw or silent bad inputs
# captum options, LabelFree's features_in_step and a_batch shape, the influence solve, ECG5000 labels and the
# pretext tasks' options: each is refused by lfeval, before Quantus/captum/torch (or training) sees it.
def _ig(c, **kw):
    return lfeval.explain(c.ae, c.x, method="IntegratedGradients", **kw)


def _pf(step):
    return LabelFree(quantus.PixelFlipping(features_in_step=step, disable_warnings=True))


_TAB = np.random.default_rng(0).random((6, 1, 30)).astype(np.float32)  # breast_cancer-like rows: 30 features
_TAB_NET = nn.Sequential(nn.Flatten(), nn.Linear(30, 3)).eval()

LAST_CASES = [
    # 1. captum's integer options: an AssertionError (or NaN) inside captum before
    ("captum/ig-steps-zero", lambda c: _ig(c, n_steps=0), InvalidArgument,
     r"IntegratedGradients option `n_steps` must be an integer >= 1, got 0 \(captum's default: 50\)"),
    ("captum/ig-steps-float", lambda c: _ig(c, n_steps=2.5), InvalidArgument, "`n_steps` must be an integer >= 1"),
    ("captum/ig-internal-batch", lambda c: _ig(c, internal_batch_size=0), InvalidArgument,
     "`internal_batch_size` must be an integer >= 1"),
    ("captum/ig-method", lambda c: get_explainer("IntegratedGradients").check_options({"method": "simpson"}),
     UnknownName, "IntegratedGradients option `method`"),
    ("captum/ig-riemann-one-step", lambda c: get_explainer("IntegratedGradients").check_options(
        {"method": "riemann_left", "n_steps": 1}), InvalidArgument,
     "`n_steps` must be >= 2 with method='riemann_left'"),
    ("captum/shapley-samples", lambda c: lfeval.explain(c.ae, c.x, method="ShapleyValueSampling", n_samples=0),
     InvalidArgument, "ShapleyValueSampling option `n_samples` must be an integer >= 1"),
    ("captum/ablation-per-eval", lambda c: lfeval.explain(c.ae, c.x, method="FeatureAblation",
                                                          perturbations_per_eval=0),
     InvalidArgument, "FeatureAblation option `perturbations_per_eval` must be an integer >= 1"),
    ("captum/occlusion-stride", lambda c: lfeval.explain(c.ae, c.x, method="Occlusion", strides=0), InvalidArgument,
     "Occlusion option `strides` must be a positive integer"),
    ("captum/occlusion-window", lambda c: lfeval.explain(c.ae, c.x, method="Occlusion",
                                                         sliding_window_shapes=(1, 0, 2)),
     InvalidArgument, "Occlusion option `sliding_window_shapes`"),
    # 2. features_in_step must divide the features per channel (Quantus' modulo AssertionError before)
    ("labelfree/steps-digits", lambda c: _pf(7)(c.ae, c.x, a_batch=c.a), InvalidArgument,
     r"`features_in_step`=7 must divide the 64 features per channel .* 1, 2, 4, 8, 16, 32, 64"),
    ("labelfree/steps-tabular", lambda c: _pf(7)(_TAB_NET, _TAB, a_batch=_TAB), InvalidArgument,
     r"`features_in_step`=7 must divide the 30 features per channel .* 1, 2, 3, 5, 6, 10, 15, 30"),
    ("labelfree/steps-zero", lambda c: _pf(0), InvalidArgument, "`features_in_step` must be an integer >= 1"),
    # 3. a_batch of another shape than x_batch (Quantus' dimension AssertionError / ValueError before)
    ("labelfree/a-batch-small", lambda c: _pf(8)(c.ae, c.x, a_batch=c.a[:, :, :4, :4]), InvalidInput,
     r"`a_batch` has per-sample shape \(1, 4, 4\), which does not fit x_batch's \(1, 8, 8\)"),
    ("labelfree/a-batch-row", lambda c: _pf(8)(c.ae, c.x, a_batch=c.a[:, 0, 0]), InvalidInput,
     r"`a_batch` has per-sample shape \(8,\)"),
    ("labelfree/a-batch-scalar", lambda c: _pf(8)(c.ae, c.x, a_batch=c.a[:, :1, :1, :1]), InvalidInput,
     "`a_batch` has per-sample shape"),
    # 4. an exactly singular Hessian (torch's _LinAlgError before)
    ("examples/influence-singular", lambda c: importance(c.ae, c.x_tr, c.x, "influence", damping=0.0),
     InvalidArgument, r"is singular with damping=0, .* pass a positive `damping`, e.g. damping=1e-3"),
    # 6./7. pretext options, refused before training
    ("train/denoising-sigma", lambda c: _train(c, pretext="denoising", sigma=-0.3), InvalidArgument,
     "`sigma` must be a finite number >= 0, got -0.3"),
    ("train/denoising-sigma-nan", lambda c: _train(c, pretext="denoising", sigma=float("nan")), InvalidArgument,
     "`sigma`"),
    ("train/inpainting-p", lambda c: _train(c, pretext="inpainting", p=1.5), InvalidArgument,
     r"`p` \(the inpainting drop rate\) must be in \[0, 1\), got 1.5"),
    ("train/inpainting-p-one", lambda c: _train(c, pretext="inpainting", p=1.0), InvalidArgument,
     "p = 1 drops every feature"),
    ("train/inpainting-p-negative", lambda c: _train(c, pretext="inpainting", p=-0.1), InvalidArgument, "`p`"),
    ("train/contrastive-temperature", lambda c: _train(c, pretext="contrastive", temperature=0.0), InvalidArgument,
     "`temperature` must be a finite number > 0"),
    ("train/contrastive-proj-dim", lambda c: _train(c, pretext="contrastive", proj_dim=0), InvalidArgument,
     "`proj_dim`"),
    ("train/vae-beta", lambda c: _train(c, pretext="beta-vae", beta=-1.0), InvalidArgument,
     "`beta` must be a finite number >= 0"),
    ("train/tc-vae-beta-inf", lambda c: _train(c, pretext="tc-vae", beta=float("inf")), InvalidArgument, "`beta`"),
]


@pytest.mark.parametrize("case", LAST_CASES, ids=[case[0] for case in LAST_CASES])
def test_last_bad_inputs_raise_a_named_error(c, case):
    test_bad_input_raises_a_named_error(c, case)


def test_pretext_option_limits_are_accepted():
    """The limits of the ranges are valid: no noise, no dropped feature, no KL weight."""
    assert lfeval.models.make_task("denoising", "image", sigma=0).sigma == 0.0
    assert lfeval.models.make_task("inpainting", "image", p=0.0).p == 0.0
    assert lfeval.models.make_task("beta-vae", "image", beta=0).beta == 0.0


def test_attribution_shapes_quantus_accepts_are_accepted():
    """check_attribution_shape follows Quantus' rule: a channel axis of 1 (or a missing one) stands for any
    number of channels; a shape Quantus cannot place is refused."""
    from lfeval.metrics.label_free_adapter import check_attribution_shape

    for a_shape in [(2, 3, 8, 8), (2, 1, 8, 8), (2, 8, 8)]:
        check_attribution_shape(a_shape, (2, 3, 8, 8))
    check_attribution_shape((2, 1, 30), (2, 1, 30))
    for a_shape in [(2, 3, 4, 4), (2, 8), (2, 3, 8, 8, 1), (2, 1, 1, 1)]:
        with pytest.raises(InvalidInput, match="does not fit x_batch's"):
            check_attribution_shape(a_shape, (2, 1, 8, 8))


def test_labelfree_valid_features_in_step_still_scores(c):
    assert len(_pf(16)(c.ae, c.x, a_batch=c.a)) == len(c.x)
    assert len(_pf(5)(_TAB_NET, _TAB, a_batch=_TAB)) == len(_TAB)


def _ecg_files(root, train_labels, test_labels):
    beats = np.random.default_rng(0).normal(size=(max(len(train_labels), len(test_labels)), 140))
    for split, labels in (("TRAIN", train_labels), ("TEST", test_labels)):
        rows = [" ".join([f"{lab:.7e}"] + [f"{v:.7e}" for v in row]) for lab, row in zip(labels, beats)]
        (root / f"ECG5000_{split}.txt").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("train, test, file, bad", [
    ([1, 2, 0, 1], [1, 3, 4, 1], "ECG5000_TRAIN.txt", "0.0"),
    ([1, 2, 3, 1], [1, 7, 5, 1], "ECG5000_TEST.txt", "7.0"),
    ([1, 2.5, 3, 1], [1, 4, 5, 1], "ECG5000_TRAIN.txt", "2.5"),
])
def test_ecg5000_labels_outside_1_to_5_are_refused(tmp_path, train, test, file, bad):
    """Labels 0 and 7 were read as classes -1 and 6 beside 5 class names; now the file and the labels are named."""
    _ecg_files(tmp_path, train, test)
    with pytest.raises(InvalidInput, match=rf"{file} has labels outside ECG5000's classes 1-5 .*: {bad} in 1 row"):
        lfeval.data.load("ecg5000", root=tmp_path)


LAST_CONFIGS = [
    ('[explainer_params.IntegratedGradients]\nn_steps = 0', "IntegratedGradients option `n_steps` must be an integer"),
    ('explainers = ["Saliency", "ShapleyValueSampling"]\n[explainer_params.ShapleyValueSampling]\nn_samples = 0',
     "ShapleyValueSampling option `n_samples` must be an integer >= 1"),
    ('[metric_params.PixelFlipping]\nfeatures_in_step = 0', "`features_in_step` must be an integer >= 1"),
    ('[metric_params.PixelFlipping]\nfeatures_in_step = 2.5', "`features_in_step` must be an integer >= 1"),
    # refused when the data are loaded, before any training (digits: 64 features per channel)
    ('[metric_params.PixelFlipping]\nfeatures_in_step = 7',
     "metric_params['PixelFlipping']'s `features_in_step`=7 must divide the 64 features per channel"),
]


@pytest.mark.parametrize("toml, message", LAST_CONFIGS, ids=[t for t, _ in LAST_CONFIGS])
def test_last_bad_configs_exit_2_with_a_named_error(tmp_path, capsys, toml, message):
    test_bad_config_exits_2_with_a_named_error(tmp_path, capsys, toml, message)


# ---------------------------------------------------------------------- pair explanations (issue 30) and registries
def _pairs(c, **kw):
    from lfeval.explain.pairs import explain_pairs

    return explain_pairs(**{"model": c.ae, "a": c.x, "b": c.x[::-1].copy(), "method": "Saliency", **kw})


def _inter(c, **kw):
    from lfeval.explain.interactions import interactions

    return interactions(**{"model": c.ae, "a": c.x[:2], "b": c.x[2:4], "n_steps": 4, **kw})


def _distance(c, **kw):
    from lfeval.explain.distance import explain_distance

    return explain_distance(**{"model": c.ae, "a": c.x, "b": c.x[::-1].copy(), "n_masks": 16, "feature_res": 4,
                               **kw})


def _shift(c, metric=None, **kw):
    from lfeval.metrics import SimilarityShift

    partners = c.x[::-1].copy()
    return (metric or SimilarityShift(partners=partners))(**{"model": c.ae, "x_batch": c.x, "a_batch": c.a, **kw})


PAIR_CASES = [
    ("pairs/method", lambda c: _pairs(c, method="IntegratedGradient"), UnknownName,
     "Did you mean 'IntegratedGradients'"),
    ("pairs/no-reference", lambda c: _pairs(c, method="COCOA"), InvalidArgument, "does not take a reference latent"),
    ("pairs/side", lambda c: _pairs(c, side="c"), UnknownName, "Unknown side 'c'"),
    ("pairs/similarity", lambda c: _pairs(c, similarity="l2"), UnknownName, "Unknown similarity 'l2'"),
    ("pairs/count", lambda c: _pairs(c, b=c.x[:3]), InvalidInput, "`b` has 3 samples, `a` has 8"),
    ("pairs/shape", lambda c: _pairs(c, b=c.x[:, :, :4]), InvalidInput, "`b` samples have shape"),
    ("pairs/nan-partner", lambda c: _pairs(c, b=c.nan), InvalidInput, "`b` contains 1 NaN/inf"),
    ("pairs/option", lambda c: _pairs(c, method="IntegratedGradients", n_step=4), InvalidArgument,
     "Did you mean 'n_steps'"),
    ("pairs/batch-size", lambda c: _pairs(c, batch_size=0), InvalidArgument, "`batch_size` must be an integer"),
    ("interactions/steps", lambda c: _inter(c, n_steps=0), InvalidArgument, "`n_steps` must be an integer >= 1"),
    ("interactions/steps-bool", lambda c: _inter(c, n_steps=True), InvalidArgument, "got True"),
    ("interactions/mode", lambda c: _inter(c, mode="fwd"), UnknownName, "Unknown mode 'fwd'"),
    ("interactions/quadrature", lambda c: _inter(c, method="simpson"), UnknownName, "Unknown method 'simpson'"),
    ("interactions/count", lambda c: _inter(c, b=c.x[:3]), InvalidInput, "as many samples"),
    ("distance/n-masks-bool", lambda c: _distance(c, n_masks=True), InvalidArgument, "`n_masks` must be an integer"),
    ("distance/feature-res", lambda c: _distance(c, feature_res=9), InvalidArgument, "feature_res <= 8"),
    ("distance/feature-res-bool", lambda c: _distance(c, feature_res=True), InvalidArgument,
     "`feature_res` must be an integer >= 1"),
    ("distance/p-keep", lambda c: _distance(c, p_keep=1.5), InvalidArgument, r"`p_keep` must be in \(0, 1\)"),
    ("distance/range", lambda c: _distance(c, mask_selection_range_max=2), InvalidArgument,
     "`mask_selection_range_max` must be a fraction"),
    ("distance/empty-ranges", lambda c: _distance(c, n_masks=5, mask_selection_negative_range_min=1.0),
     InvalidArgument, "Both mask selection ranges are empty"),
    ("shift/no-partners", lambda c: _shift(c, lfeval.metrics.SimilarityShift()), InvalidArgument, "partner"),
    ("shift/partner-count", lambda c: _shift(c, lfeval.metrics.SimilarityShift(partners=c.x[:3])), InvalidInput,
     "`partners` has 3 samples"),
    ("shift/fractions", lambda c: lfeval.metrics.SimilarityShift(partners=c.x, fractions=(0.5, 0.2)),
     InvalidArgument, "`fractions`"),
    ("completeness/explanation", lambda c: lfeval.metrics.PairCompleteness(partners=c.x, explanation="m"),
     UnknownName, "Unknown explanation 'm'"),
    ("pair-explain-func/no-partners", lambda c: lfeval.metrics.PairExplainFunc()(c.ae, c.x), InvalidArgument,
     "needs the partners"),
    ("registry/none", lambda c: lfeval.registry.Registry("thing").register("x", None), InvalidArgument,
     "Nothing to register"),
    ("registry/empty-name", lambda c: lfeval.registry.Registry("thing").register("", 1), InvalidArgument,
     "non-empty name"),
    ("registry/unknown", lambda c: lfeval.data.LOADERS.get("digts"), UnknownName, "Did you mean 'digits'"),
]


@pytest.mark.parametrize("case", PAIR_CASES, ids=[case[0] for case in PAIR_CASES])
def test_pair_and_registry_bad_inputs_raise_a_named_error(c, case):
    test_bad_input_raises_a_named_error(c, case)


PAIR_CONFIGS = [
    ('pairs = 3', "`pairs` must be a non-empty str"),
    ('pairs = "pairs.txt"', "ending in .csv or .npy"),
    ('pairs = "{root}/missing.csv"', "does not exist"),
    ('pairs = "nearest"\npair_explainers = ["COCOA", "Random"]', "does not take a reference latent"),
    ('pairs = "nearest"\npair_explainers = ["IntegratedGradient"]', "Did you mean 'IntegratedGradients'"),
    ('pairs = "nearest"\npair_similarity = "l2"', "Unknown entry 'l2' in config `pair_similarity`"),
    ('pairs = "nearest"\npair_maps = -1', "`pair_maps` must be an integer >= 0"),
    ('pairs = "nearest"\npair_maps = true', "`pair_maps` must be an integer >= 0"),
    ('pairs = "nearest"\npair_steps = 0', "`pair_steps` must be an integer >= 1"),
    ('pair_maps = 2', "pair explanations, which are off"),
    ('pairs = "nearest"\npair_metrics = ["RepresentationShift"]', "does not score pair explanations"),
    ('pairs = "nearest"\npair_metrics = ["SimilarityShft"]', "Did you mean 'SimilarityShift'"),
    ('metrics = ["SimilarityShift"]', "name them in `pair_metrics`"),
    ('meta_metrics = ["SimilarityShift"]', "but pair explanations are off"),
]


@pytest.mark.parametrize("toml, message", PAIR_CONFIGS, ids=[t for t, _ in PAIR_CONFIGS])
def test_bad_pair_configs_exit_2_with_a_named_error(tmp_path, capsys, toml, message):
    test_bad_config_exits_2_with_a_named_error(tmp_path, capsys, toml, message)
