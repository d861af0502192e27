"""Every lfeval path on one encoder, and the agreement of two placements of it (device, dtype).

lfeval computes on the encoder's device and in its dtype (DESIGN, Conventions). :func:`run_paths` runs each
explainer, metric, adapter, example method and MetaQuantus test once on small real inputs and returns its
result as NumPy; :func:`compare_placements` runs them for an encoder and for a copy moved elsewhere (``"cuda"``,
``torch.float64``, ``torch.bfloat16``) and reports the largest difference relative to the largest value of the
reference. This is what ``benchmarks/bench_gpu.py`` prints as its equality table, and what the CPU test suite
checks with a float64 copy (tests/test_devices.py): an input left on the wrong device or in the wrong dtype
fails there exactly as on a GPU.

>>> import lfeval, torch
>>> ds = lfeval.data.load("digits", seed=0)
>>> enc = lfeval.models.train_encoder(ds, "reconstruction", latent_dim=4, epochs=1, min_steps=0,
...                                   display_progressbar=False)
>>> table = compare_placements(enc, ds, dtype=torch.float64, paths=["Saliency", "RepresentationShift"])
>>> bool((table["relative_error"] < 1e-4).all())
True
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Optional

import numpy as np
import pandas as pd
import quantus
import torch

from .encoder import Encoder
from .errors import InvalidArgument
from .evaluation import evaluate
from .explain.examples import importance
from .explain.features import explain, explain_units
from .explain.interactions import interactions
from .explain.pairs import explain_pairs
from .meta import LabelFreeMetaEvaluation, default_test_suite
from .metrics import (
    ROAD,
    CorpusDeletion,
    LabelFree,
    LabelFreeSimilarityRate,
    PairCompleteness,
    RepresentationShift,
    RepresentationShiftInsertion,
    SimilarityRate,
    SimilarityShift,
    UnitSaliencyCorrelation,
)
from .validation import check_choice, to_numpy

#: tolerance of a deterministic path between placements, relative to the largest ``|value|`` of the reference
#: (DESIGN: CUDA equals the CPU within 1e-4 of the largest value, TF32 off)
RELATIVE_TOLERANCE = 1e-4


def _data(ds, n_test: int = 16, n_train: int = 64) -> dict:
    """Small real inputs from a data set: explicands, a training pool and their labels (NumPy, float32)."""
    x = ds.x_test[:n_test].numpy()
    return {"x": x, "x_train": ds.x_train[:n_train].numpy(), "y_train": ds.y_train[:n_train].numpy(),
            "y_test": ds.y_test[:n_test].numpy()}


def _explain(method: str, **kw) -> Callable:
    def path(enc, d):
        return explain(enc, d["x"], method=method, **kw)

    return path


def _examples(method: str, **kw) -> Callable:
    def path(enc, d):
        return importance(enc, d["x_train"], d["x"], method=method, display_progressbar=False, **kw)

    return path


def _saliency(enc, d):
    return explain(enc, d["x"], method="Saliency")


def _metric(build: Callable) -> Callable:
    def path(enc, d):
        metric = build(d)
        return np.asarray(metric(enc, d["x"], a_batch=_saliency(enc, d)), dtype=float)

    return path


def _label_free(stock: str, **kw) -> Callable:
    def build(d):
        return LabelFree(getattr(quantus, stock)(disable_warnings=True, display_progressbar=False, **kw))

    return _metric(build)


def _units(enc, d):
    return explain_units(enc, d["x"][:4], method="Saliency")


def _meta(enc, d):
    meta = LabelFreeMetaEvaluation(default_test_suite(seed=0), {"Saliency": {}, "Random": {}}, iterations=2,
                                   nr_perturbations=2, seed=0, display_progressbar=False)
    meta(RepresentationShift(fractions=(0.1, 0.3, 0.6)), enc, d["x"])
    return meta.summary().to_numpy(dtype=float)


def _evaluate(enc, d):
    table = evaluate({"RepresentationShift": RepresentationShift(fractions=(0.1, 0.5))},
                     {"Saliency": {}, "IntegratedGradients": {"n_steps": 8}}, enc, d["x"])
    return table.to_numpy(dtype=float)


def _rates(metric, enc, d, y=None):
    """A similarity-rate metric on the cosine example importance."""
    return np.asarray(metric(enc, d["x"], y, a_batch=to_numpy(_examples("cosine")(enc, d))), dtype=float)


def _cem(enc, d, mode):
    return _explain(mode, iterations=20, c_steps=2, x_train=d["x_train"])(enc, d)


def _partners(x):
    """A pair partner for each explicand: the next one (cyclically), in the explicands' own type."""
    return x[list(range(1, len(x))) + [0]]


def _paths() -> dict:
    paths = {name: _explain(name) for name in ("Saliency", "InputXGradient", "DeepLift", "GuidedBackprop",
                                                 "Deconvolution", "Occlusion", "FeatureAblation", "Random")}
    paths.update({
        "IntegratedGradients": _explain("IntegratedGradients", n_steps=16),
        "ShapleyValueSampling": _explain("ShapleyValueSampling", n_samples=2),
        "GradientShap": _explain("GradientShap", n_samples=16),
        "SmoothGrad": _explain("SmoothGrad", n_samples=16),
        "RELAX": _explain("RELAX", n_masks=256),
        "DistanceExplainer": _explain("DistanceExplainer", n_masks=256, feature_res=4),
        "COCOA": lambda enc, d: _explain("COCOA", x_train=d["x_train"], n_clusters=4)(enc, d),
        "explain_units": _units,
        "RepresentationShift": _metric(lambda d: RepresentationShift(fractions=(0.1, 0.3, 0.6, 1.0))),
        "RepresentationShiftInsertion": _metric(lambda d: RepresentationShiftInsertion(fractions=(0.1, 0.5))),
        "ROAD": _metric(lambda d: ROAD(percentages=(20, 60))),
        "CorpusDeletion": _metric(lambda d: CorpusDeletion(d["x_train"], steps=8)),
        "LabelFree(PixelFlipping)": _label_free("PixelFlipping", features_in_step=16),
        "LabelFree(FaithfulnessCorrelation)": _label_free("FaithfulnessCorrelation", nr_runs=8, subset_size=8),
        "LabelFree(ROAD)": _label_free("ROAD", percentages=[20, 60]),
        "UnitSaliencyCorrelation": lambda enc, d: np.asarray(UnitSaliencyCorrelation(method="Saliency")(
            enc, d["x"][:4]), dtype=float),
        "cosine": _examples("cosine"),
        "dknn": _examples("dknn"),
        "simplex": _examples("simplex"),
        "tracin": _examples("tracin"),
        "influence": _examples("influence"),
        "SimilarityRate": lambda enc, d: _rates(SimilarityRate(d["y_train"], M=(1, 5)), enc, d, d["y_test"]),
        "LabelFreeSimilarityRate": lambda enc, d: _rates(LabelFreeSimilarityRate(d["x_train"], n_clusters=4, M=(5,)),
                                                         enc, d),
        "LabelFreeMetaEvaluation": _meta,
        "lfeval.evaluate": _evaluate,
        # pair explanations: each explicand with the next one as its partner
        "pairs(IntegratedGradients)": lambda enc, d: explain_pairs(enc, d["x"], _partners(d["x"]),
                                                                   method="IntegratedGradients", n_steps=16),
        "interactions": lambda enc, d: interactions(enc, d["x"][:4], _partners(d["x"])[:4], n_steps=8),
        "SimilarityShift": lambda enc, d: np.asarray(SimilarityShift(partners=_partners(d["x"]), fractions=(
            0.0, 0.25, 0.5, 1.0))(enc, d["x"], a_batch=np.abs(d["x"] - 0.5)), dtype=float),
        "interactions(cosine)": lambda enc, d: interactions(enc, d["x"][:4], _partners(d["x"])[:4], n_steps=8,
                                                             similarity="cosine"),
        "PairCompleteness": lambda enc, d: np.asarray(PairCompleteness(partners=_partners(d["x"]))(
            enc, d["x"], a_batch=explain_pairs(enc, d["x"], _partners(d["x"]), method="IntegratedGradients",
                                               n_steps=16)), dtype=float),
    })
    for mode in ("CEM-PP", "CEM-PN"):  # prototypes fitted on the training pool
        paths[mode] = functools.partial(_cem, mode=mode)
    return paths


def path_names() -> tuple:
    """The names of the checked paths."""
    return tuple(_paths())


def run_paths(encoder, ds, paths=None, n_test: int = 16, n_train: int = 64, inputs: Optional[Callable] = None) -> dict:
    """``{path: (result as a float64 NumPy array, or the exception it raised, seconds)}`` for ``encoder``.

    ``ds`` is an :class:`lfeval.data.Dataset` (its first ``n_test`` test and ``n_train`` training examples are
    used); ``inputs`` optionally converts each input array before the call (e.g. to float64 NumPy or to
    float16 tensors), to check lfeval's boundary conversion.
    """
    table = _paths()
    names = list(table) if paths is None else [check_choice(p, table, "diagnostic path") for p in paths]
    data = _data(ds, n_test, n_train)
    if inputs is not None:
        data = {k: (inputs(v) if k.startswith("x") else v) for k, v in data.items()}
    out = {}
    for name in names:
        np.random.seed(0)  # Quantus' own draws (FaithfulnessCorrelation's subsets) use NumPy's global generator
        start = time.perf_counter()
        try:
            value = table[name](encoder, data)
            value = np.asarray(to_numpy(value, dtype=np.float64) if isinstance(value, torch.Tensor) else value,
                               dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - a failing path is a row of the report, not the end of it
            value = exc
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out[name] = (value, time.perf_counter() - start)
    return out


def compare_results(reference: dict, other: dict, tolerance: float = RELATIVE_TOLERANCE) -> pd.DataFrame:
    """One row per path: the largest ``|difference|`` relative to the reference's largest ``|value|``, and whether it
    is within ``tolerance`` (NaN where the reference has NaN, nowhere else)."""
    rows = []
    for name, (ref, t_ref) in reference.items():
        val, t_val = other.get(name, (None, float("nan")))
        row = {"path": name, "seconds_reference": t_ref, "seconds": t_val, "error": ""}
        if isinstance(ref, Exception) or isinstance(val, Exception) or val is None:
            bad = ref if isinstance(ref, Exception) else val
            row.update(relative_error=np.nan, ok=False, error=f"{type(bad).__name__}: {bad}"[:300])
        elif ref.shape != val.shape:
            row.update(relative_error=np.nan, ok=False, error=f"shape {val.shape} != {ref.shape}")
        else:
            scale = float(np.nanmax(np.abs(ref))) if ref.size else 0.0
            diff = float(np.nanmax(np.abs(ref - val))) if ref.size else 0.0
            nan_mismatch = bool((np.isnan(ref) != np.isnan(val)).any())
            rel = diff / scale if scale > 0 else diff
            row.update(relative_error=rel, ok=bool(rel <= tolerance and not nan_mismatch))
        rows.append(row)
    return pd.DataFrame(rows).set_index("path")


def compare_placements(encoder, ds, device=None, dtype=None, paths=None, inputs: Optional[Callable] = None,
                       tolerance: float = RELATIVE_TOLERANCE, **kw) -> pd.DataFrame:
    """:func:`compare_results` of ``encoder`` as it is and of a copy moved to ``device`` and/or ``dtype``.

    ``inputs`` converts the inputs of the moved copy's run only (the reference gets float32 NumPy).
    """
    if not isinstance(encoder, Encoder):
        raise InvalidArgument("compare_placements needs an lfeval.Encoder (e.g. from lfeval.models.train_encoder).")
    if device is None and dtype is None and inputs is None:
        raise InvalidArgument("Pass `device`, `dtype` or `inputs`: what should differ from the reference run?")
    moved = encoder.copy().to(device=device, dtype=dtype)
    return compare_results(run_paths(encoder, ds, paths, **kw), run_paths(moved, ds, paths, inputs=inputs, **kw),
                           tolerance)


__all__ = ["RELATIVE_TOLERANCE", "path_names", "run_paths", "compare_results",
           "compare_placements"]
