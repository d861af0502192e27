"""Meta-evaluation of label-free metrics with MetaQuantus: perturbation tests for encoders and a
fast, corrected MetaEvaluation (Hedström et al., "The Meta-Evaluation Problem in Explainable AI", 2023)."""

from .benchmarking import benchmark
from .meta_evaluation import TEST_NAMES, LabelFreeMetaEvaluation, lower_is_better
from .perturbation_tests import (
    LatentInputPerturbationTest,
    LatentModelPerturbationTest,
    LatentPerturbationTest,
    default_test_suite,
)

__all__ = ["LabelFreeMetaEvaluation", "LatentInputPerturbationTest", "LatentModelPerturbationTest",
           "LatentPerturbationTest", "default_test_suite", "benchmark", "lower_is_better", "TEST_NAMES"]
