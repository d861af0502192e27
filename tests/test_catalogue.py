"""The metric catalogue: its order (the demo's CSV rows), the run's default lists, the facts read from the metric
classes' flags (never restated in an entry), and a complete catalogue in a process that imported one metric module."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import quantus
import torch

import lfeval
from lfeval.config import META_METRICS, METRICS
from lfeval.errors import NotAdaptable, UnknownName
from lfeval.metrics import ADAPTABLE, CATALOGUE, ROAD, LabelFree, LabelFreeMetric, MetricEntry, register_metric
from lfeval.metrics.catalogue import ORDER, STOCK, default_metrics, get_entry, run_needs

BUILT_IN = [
    "RepresentationShift", "PretextCorrelation", "SimilarityRate", "SimilarityContrast", "PixelFlipping",
    "FaithfulnessCorrelation", "FaithfulnessEstimate", "MonotonicityCorrelation", "Selectivity", "RegionPerturbation",
    "ROAD", "Infidelity", "Sparseness", "Complexity", "MaxSensitivity", "AvgSensitivity", "RelativeInputStability",
    "RelativeRepresentationStability", "RepresentationShiftInsertion", "RepresentationShiftLeRF", "CorpusInsertion",
    "CorpusDeletion", "CorpusMajorityInsertion", "CorpusMajorityDeletion", "LabelFreeSimilarityRate",
    "NeighbourhoodRate",
]
#: the facts of the catalogue before the metrics declared them (issue 29): none may change
EXAMPLE_METRICS = {"SimilarityRate", "SimilarityContrast", "LabelFreeSimilarityRate", "NeighbourhoodRate"}
NEEDS = {"PretextCorrelation": {"references"}, "SimilarityRate": {"labels"}, "SimilarityContrast": {"labels"},
         **{n: {"continuous"} for n in ("MonotonicityCorrelation", "ROAD", "Infidelity", "MaxSensitivity",
                                        "AvgSensitivity", "RelativeInputStability", "RelativeRepresentationStability")},
         **{n: {"training"} for n in ("CorpusInsertion", "CorpusDeletion", "CorpusMajorityInsertion",
                                      "CorpusMajorityDeletion", "LabelFreeSimilarityRate", "NeighbourhoodRate")}}
CURVES = {"RepresentationShift", "SimilarityRate", "ROAD", "RepresentationShiftInsertion", "RepresentationShiftLeRF",
          "CorpusInsertion", "CorpusDeletion", "CorpusMajorityInsertion", "CorpusMajorityDeletion",
          "LabelFreeSimilarityRate"}


def test_the_catalogue_keeps_its_order():
    """Today's metrics first, in today's order (metrics added later may follow)."""
    assert list(CATALOGUE)[:len(BUILT_IN)] == BUILT_IN == list(ORDER)[:len(BUILT_IN)]
    assert list(CATALOGUE.names()) == list(CATALOGUE)


def test_a_user_metric_follows_the_built_ins_and_a_replaced_built_in_keeps_its_place():
    sparseness, before = CATALOGUE["Sparseness"], list(CATALOGUE)
    try:
        register_metric(MetricEntry("AUserMetric", build=lambda ctx, kind, params: None, text="A user metric."))
        register_metric(MetricEntry("Sparseness", build=sparseness.build, text="Replaced."))
        assert list(CATALOGUE) == before + ["AUserMetric"] and CATALOGUE["Sparseness"].text == "Replaced."
    finally:
        CATALOGUE.pop("AUserMetric", None)
        register_metric(sparseness)
    assert list(CATALOGUE) == before and CATALOGUE["Sparseness"] is sparseness


def test_the_default_lists_are_read_from_the_entries():
    assert METRICS == default_metrics() == (
        "RepresentationShift", "PretextCorrelation", "SimilarityRate", "SimilarityContrast", "PixelFlipping",
        "FaithfulnessCorrelation", "Sparseness", "Complexity", "MaxSensitivity", "RelativeRepresentationStability")
    assert META_METRICS == default_metrics(meta=True) == ("RepresentationShift", "PixelFlipping",
                                                          "FaithfulnessCorrelation")


def test_kinds_needs_and_token_fitness_come_from_the_classes_and_the_stock_table():
    for name, entry in CATALOGUE.items():
        if isinstance(entry.target, type) and issubclass(entry.target, LabelFreeMetric):  # the class's flags
            assert entry.kinds == entry.target.explanations and entry.needs == run_needs(entry.target), name
            assert entry.label_free
        else:  # a stock Quantus metric: its row
            row = STOCK[name]
            assert entry.target is getattr(quantus, name) and entry.label_free == row.adapted, name
            assert entry.kinds == ("features",) and ("continuous" in entry.needs) == (not row.tokens), name
        if name not in BUILT_IN:
            continue
        # and they are what they were before the classes declared them
        kinds = ("features", "examples") if name == "PretextCorrelation" else (
            ("examples",) if name in EXAMPLE_METRICS else ("features",))
        assert entry.kinds == kinds and entry.needs == NEEDS.get(name, set()), name
        assert (entry.curve is not None) == (name in CURVES), name
    assert set(ADAPTABLE) == {"PixelFlipping", "FaithfulnessCorrelation", "FaithfulnessEstimate",
                              "MonotonicityCorrelation", "RegionPerturbation", "Selectivity", "SensitivityN", "IROF",
                              "ROAD", "Infidelity"}
    assert all(ADAPTABLE[n] is STOCK[n] for n in ADAPTABLE)


def test_an_unknown_metric_names_the_closest():
    with pytest.raises(UnknownName, match="Did you mean 'SimilarityRate'"):
        get_entry("SimilarityRat")


class _Tokens(torch.nn.Module):
    def forward(self, x):
        return x.float().flatten(1)[:, :3]


def test_token_ids_are_refused_by_the_one_fact_of_fitness():
    """ROAD's ``requires_continuous`` flag and the stock table's ``tokens`` refuse token ids (and give the entries'
    "continuous" need); a subclass that clears the flag is fit for them in both places."""
    enc = lfeval.as_encoder(_Tokens().eval(), modality="text", input_shape=(2, 6))
    x = np.stack([[[101, 2000, 2001, 2002, 102, 0], [1, 1, 1, 1, 1, 0]]] * 3).astype(np.float32)
    a = np.random.default_rng(0).random(x.shape).astype(np.float32)
    with pytest.raises(NotAdaptable, match="token ids"):
        ROAD(percentages=(25, 75))(enc, x, a_batch=a)
    with pytest.raises(NotAdaptable, match="token ids"):
        LabelFree(quantus.Infidelity(disable_warnings=True))(enc, x, a_batch=a)
    assert len(LabelFree(quantus.PixelFlipping(features_in_step=1, disable_warnings=True))(enc, x, a_batch=a)) == 3

    class TokenRoad(ROAD):
        requires_continuous = False

    assert run_needs(ROAD) == {"continuous"} == CATALOGUE["ROAD"].needs and run_needs(TokenRoad) == frozenset()
    assert not ADAPTABLE["Infidelity"].tokens and "continuous" in CATALOGUE["Infidelity"].needs


FRESH = {
    "import road": "import lfeval.metrics.road\n",
    "import similarity_rate": "import lfeval.metrics.similarity_rate\n",
    "unpickle ROAD": f"import pickle\npickle.loads({pickle.dumps(ROAD(percentages=(20, 60)))!r})\n",
}


@pytest.mark.parametrize("case", list(FRESH))
def test_a_process_that_imported_one_metric_module_has_the_whole_catalogue(case):
    """As in a Ray worker that unpickled one metric: every entry is there, in order, with the default lists."""
    code = FRESH[case] + ("import sys\nfrom lfeval.metrics.catalogue import CATALOGUE, default_metrics\n"
                          "print(list(CATALOGUE)[:26], default_metrics(), default_metrics(meta=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"{BUILT_IN} {METRICS} {META_METRICS}"
