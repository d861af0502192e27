"""A fast, corrected :class:`metaquantus.MetaEvaluation` that also works on encoders.

Same call and result layout as MetaQuantus 0.0.5 (``results_eval_scores``,
``results_intra_scores``, ``results_inter_scores``, ``results_consistency_scores``,
``results_meta_consistency_scores``), so its plotting and benchmarking helpers read the results.
Differences, each a fix of a documented MetaQuantus bug or cost:

1. ``score_direction`` is validated: "higher", "lower", a bool (MetaQuantus' own meaning: True =
   lower is better) or, by default, the estimator's ``score_direction``. MetaQuantus tests the
   string for truthiness, so "higher" behaved as "lower".
2. ``IAC_{AR} std`` is the std of IAC_AR (MetaQuantus reported the IAC_NR std).
3. A perturbation that keeps no sample is left out of the averages instead of producing NaN
   (and a test that keeps none at all scores 0 with a warning).
4. The unperturbed explanations and scores are computed once for all tests, not once per test.
5. No ``gc.collect()`` per iteration; gc is frozen during the run (MetaQuantus spent ~90% of a
   small run in gc.collect).
6. ``y_batch=None`` (encoders): no argmax "labels" are invented; label-free explain functions and
   metrics receive None. With labels (classifiers) the stock behaviour is kept: y = argmax f(x).
   ``score_labels`` passes labels to metrics that need them only to score (SimilarityRate) without
   turning the encoder into a classifier.
7. The IAC's Wilcoxon test gives scipy's p-values, with its exact permutation test on small kept sets
   vectorised (:mod:`lfeval.meta.wilcoxon`), and Quantus' per-sample no-change check is skipped for an
   estimator whose warnings are off and its attribution check vectorised (:mod:`lfeval.metrics.fast_paths`).
"""

from __future__ import annotations

import gc
import warnings
from typing import Callable, Optional

import numpy as np
import quantus
import scipy.stats
import torch
from metaquantus import MetaEvaluation
from metaquantus.helpers.utils import generate_explanations
from tqdm.auto import tqdm

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..explain.features import explain as lf_explain
from ..metrics.base import score_direction as direction_of
from ..metrics.fast_paths import quick_checks
from ..precision import precise
from ..validation import check_choice, check_inputs, check_positive_int, to_numpy
from .wilcoxon import wilcoxon

TEST_NAMES = ("Model Resilience Test", "Model Adversary Test", "Input Resilience Test", "Input Adversary Test")


def lower_is_better(score_direction, estimator=None) -> bool:
    """Normalise a score direction to MetaQuantus' bool (True = lower is better); None reads the
    estimator's (:func:`lfeval.metrics.score_direction`)."""
    if score_direction is None:
        return direction_of(estimator) == "lower"
    if isinstance(score_direction, (bool, np.bool_)):
        return bool(score_direction)
    value = str(score_direction).lower()
    if value not in ("higher", "lower"):
        raise InvalidArgument(f"`score_direction` must be 'higher', 'lower' or a bool, got {score_direction!r}.")
    return value == "lower"


class LabelFreeMetaEvaluation(MetaEvaluation):
    """MetaQuantus' meta-evaluation (IAC, IEC, MC) for encoders and classifiers.

    Parameters are MetaQuantus' (``test_suite``, ``xai_methods``, ``iterations``,
    ``nr_perturbations``, ``explain_func``, ``intra_measure``); ``explain_func`` defaults to
    :func:`lfeval.explain`, ``intra_measure`` to :func:`lfeval.meta.wilcoxon.wilcoxon` (scipy's Wilcoxon test,
    same p-values, fast on small kept sets), ``write_to_file`` to False, and ``seed`` seeds every perturbation.
    """

    def __init__(self, test_suite: dict, xai_methods: dict, iterations: int = 5, nr_perturbations: int = 10,
                 explain_func: Optional[Callable] = None, intra_measure: Callable = wilcoxon,
                 path: str = "results/", fname: str = "", write_to_file: bool = False, uid: Optional[str] = None,
                 print_results: bool = False, seed: int = 0, display_progressbar: bool = True):
        if not test_suite:
            raise InvalidArgument("`test_suite` is empty; e.g. lfeval.meta.default_test_suite().")
        for name in test_suite:
            check_choice(name, TEST_NAMES, "test name (MetaQuantus reads these exact names)")
        iterations = check_positive_int(iterations, "iterations")
        nr_perturbations = check_positive_int(nr_perturbations, "nr_perturbations")
        if not isinstance(xai_methods, dict) or len(xai_methods) < 2:
            raise InvalidArgument(
                f"`xai_methods` must name at least two methods ({{method: explain kwargs}}), got {xai_methods!r}: "
                "inter-consistency (IEC) compares the ranking of methods, which one method cannot have.")
        for method, kwargs in xai_methods.items():
            if not isinstance(kwargs, dict):
                raise InvalidArgument(f"xai_methods[{method!r}] must be a dict of explain kwargs, got {kwargs!r}.")
        if explain_func is None:
            explain_func = lf_explain
        super().__init__(test_suite=test_suite, xai_methods=xai_methods, iterations=int(iterations),
                         nr_perturbations=int(nr_perturbations), explain_func=explain_func,
                         intra_measure=intra_measure, path=path, fname=fname, write_to_file=write_to_file, uid=uid,
                         sanity_check=None, print_results=print_results)
        self.seed, self.display_progressbar = check_positive_int(seed, "seed", minimum=0), display_progressbar

    @precise
    def __call__(self, estimator, model, x_batch, y_batch=None, a_batch=None, s_batch=None, channel_first=True,
                 softmax=False, device=None, model_predict_kwargs=None, score_direction=None, score_labels=None):
        """Run the meta-evaluation; returns self (results in the MetaQuantus attributes).

        ``score_labels`` (encoders only, with ``y_batch=None``): labels of ``x_batch`` handed to the metric
        and the explain function as ``y_batch`` / ``targets``, for metrics that score with labels
        (SimilarityRate); label-free explain functions ignore them.
        """
        lower = lower_is_better(score_direction, estimator)
        model = check_model(model, x_batch)
        x_batch = to_numpy(model.canonical(check_inputs(x_batch, model, "x_batch")))
        if len(x_batch) < 2:
            raise InvalidInput("A meta-evaluation compares scores over samples (Wilcoxon, rankings): pass at least 2 "
                               "samples in `x_batch` (tens for meaningful p-values).")
        if score_labels is not None:
            if y_batch is not None:
                raise InvalidArgument("Pass either `y_batch` (a classifier: y = argmax f(x)) or `score_labels` "
                                      "(an encoder's labels, only to score), not both.")
            score_labels = np.asarray(score_labels)
            if score_labels.shape != (len(x_batch),):
                raise InvalidArgument(f"`score_labels` must have shape ({len(x_batch)},), got {score_labels.shape}.")
        frozen = not gc.isenabled()
        gc.freeze()
        try:
            with quick_checks(estimator):  # Quantus' slow checks (lfeval.metrics.fast_paths)
                self.run_perturbation_analysis(estimator, model, np.asarray(x_batch, dtype=np.float32), y_batch,
                                               a_batch, s_batch, channel_first, softmax, device,
                                               model_predict_kwargs or {}, score_labels=score_labels)
            self.run_intra_analysis()
            self.run_inter_analysis(score_direction=lower)
            names = list(self.test_suite)
            if any("Resilience" in t for t in names) and any("Adversary" in t for t in names):
                self.run_meta_consistency_analysis()
        finally:
            gc.unfreeze()
            if frozen:
                gc.disable()
        return self

    def run_perturbation_analysis(self, estimator, model, x_batch, y_batch=None, a_batch=None, s_batch=None,
                                  channel_first=True, softmax=False, device=None, model_predict_kwargs=None,
                                  score_labels=None):
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        for test in self.test_suite.values():
            if hasattr(test, "reset"):
                test.reset()
        self.n_samples = len(x_batch)
        self.results_y_true = y_batch
        if y_batch is not None:  # classifiers: MetaQuantus' y = argmax f(x)
            wrapped = quantus.helpers.utils.get_wrapped_model(model=model, channel_first=channel_first,
                                                              softmax=softmax, device=device,
                                                              model_predict_kwargs=model_predict_kwargs or {})
            self.results_y_preds = np.argmax(wrapped.predict(torch.Tensor(x_batch)), axis=1).astype(int)
            self.results_indices_correct = np.asarray(y_batch) == self.results_y_preds
        else:
            self.results_y_preds = None
            self.results_indices_correct = None
        y = self.results_y_preds if y_batch is not None else score_labels
        unperturbed = {}
        for method, kwargs in self.xai_methods.items():  # once for all tests
            kwargs = {**kwargs, "method": method}
            if getattr(estimator, "example_attributions", False):  # stock estimators lack it; (N, n_train) matrices
                a = np.asarray(self.explain_func(model=model, inputs=x_batch, targets=y, **kwargs))
            else:
                a = generate_explanations(model=model, x_batch=x_batch, y_batch=y, explain_func=self.explain_func,
                                          explain_func_kwargs=dict(kwargs), abs=estimator.abs,
                                          normalise=estimator.normalise, normalise_func=estimator.normalise_func,
                                          normalise_func_kwargs=estimator.normalise_func_kwargs, device=device)
            unperturbed[method] = np.asarray(estimator(
                model=model, x_batch=x_batch, y_batch=y, a_batch=a, s_batch=s_batch, channel_first=channel_first,
                explain_func=self.explain_func, explain_func_kwargs=kwargs, model_predict_kwargs=model_predict_kwargs,
                softmax=softmax, device=device)).astype(float)
        for name, test in self.test_suite.items():
            self.results_eval_scores[name] = dict(unperturbed)
            self.results_eval_scores_perturbed[name] = {}
            self.results_y_preds_perturbed[name] = {}
            self.results_indices_perturbed[name] = {}
            for i in tqdm(range(self.iterations), desc=name, disable=not self.display_progressbar, leave=False):
                scores, preds, keep = test(estimator=estimator, nr_perturbations=self.nr_perturbations,
                                           xai_methods=self.xai_methods, model=model, x_batch=x_batch, y_batch=y,
                                           a_batch=None, s_batch=s_batch, channel_first=channel_first,
                                           explain_func=self.explain_func, model_predict_kwargs=model_predict_kwargs,
                                           softmax=softmax, device=device)
                self.results_eval_scores_perturbed[name][i] = scores
                self.results_y_preds_perturbed[name][i] = preds
                self.results_indices_perturbed[name][i] = np.asarray(keep, dtype=bool)

    # ------------------------------------------------------------------ scores
    def compute_iac_score(self, q, q_hat, indices, test_name, measure=scipy.stats.wilcoxon, alternative="two-sided",
                          zero_method="zsplit") -> float:
        """Wilcoxon p-value on the kept samples (NR: p, AR: 1 - p); NaN = no kept sample (left out later)."""
        indices = np.asarray(indices, dtype=bool)
        if indices.sum() == 0:
            return np.nan
        q, q_hat = np.asarray(q)[indices], np.asarray(q_hat)[indices]
        try:
            p_value = float(measure(q, q_hat, alternative=alternative, zero_method=zero_method)[1])
        except ValueError:
            p_value = 0.0  # as MetaQuantus: a test that cannot run counts as a significant change
        if np.isnan(p_value):
            p_value = 1.0  # identical scores on every kept sample: no detectable change
        return 1 - p_value if "Adversary" in test_name else p_value

    def run_intra_analysis(self) -> dict:
        self.results_intra_scores = {}
        for name in self.test_suite:
            self.results_intra_scores[name] = {}
            for method in self.xai_methods:
                q = self.results_eval_scores[name][method]
                self.results_intra_scores[name][method] = np.array([
                    [self.compute_iac_score(q, self.results_eval_scores_perturbed[name][i][method][p],
                                            self.results_indices_perturbed[name][i][p], name, self.intra_measure)
                     for p in range(self.nr_perturbations)]
                    for i in range(self.iterations)
                ])
        return self.results_intra_scores

    def run_inter_analysis(self, score_direction) -> dict:
        lower = lower_is_better(score_direction)
        self.results_inter_scores = {}
        methods = list(self.xai_methods)
        for name in self.test_suite:
            q_star = np.stack([self.results_eval_scores[name][m] for m in methods])
            out = np.zeros((self.iterations, self.nr_perturbations))
            for i in range(self.iterations):
                for k in range(self.nr_perturbations):
                    q_hat = np.stack([self.results_eval_scores_perturbed[name][i][m][k] for m in methods])
                    keep = self.results_indices_perturbed[name][i][k]
                    out[i, k] = self.compute_iec_score(q_star, q_hat, keep, lower, name)
            self.results_inter_scores[name] = out
        return self.results_inter_scores

    @staticmethod
    def compute_iec_adversary(Q_star, Q_hat, indices, score_direction) -> float:
        """Fraction of (method, kept sample) whose quality moved the wrong way for the metric (got worse)."""
        indices = np.asarray(indices, dtype=bool)
        if indices.sum() == 0:
            return np.nan
        a, b = Q_star[:, indices], Q_hat[:, indices]
        return float(np.mean(a < b) if lower_is_better(score_direction) else np.mean(a > b))

    @staticmethod
    def compute_iec_resilience(Q_star, Q_hat, indices) -> float:
        """Agreement of the per-sample ranking of methods before and after (kept samples)."""
        indices = np.asarray(indices, dtype=bool)
        if indices.sum() == 0:
            return np.nan
        r_star, r_hat = np.argsort(Q_star, axis=0), np.argsort(Q_hat, axis=0)
        return float(np.mean(r_star[:, indices] == r_hat[:, indices]))

    def run_meta_consistency_analysis(self) -> dict:
        """MetaQuantus' IAC/IEC/MC aggregation, with NaN-free means and the IAC_AR std fixed."""
        kinds = sorted({name.split(" ")[0] for name in self.test_suite})
        for kind in kinds:
            res, adv = f"{kind} Resilience Test", f"{kind} Adversary Test"
            if res not in self.test_suite or adv not in self.test_suite:
                continue
            shape = (len(self.xai_methods), self.iterations, self.nr_perturbations)
            raw = {
                "intra_scores_res": np.array(list(self.results_intra_scores[res].values())).reshape(shape),
                "intra_scores_adv": np.array(list(self.results_intra_scores[adv].values())).reshape(shape),
                "inter_scores_res": np.asarray(self.results_inter_scores[res]),
                "inter_scores_adv": np.asarray(self.results_inter_scores[adv]),
            }
            for key, values in raw.items():
                if np.isnan(values).all():
                    warnings.warn(f"{kind} tests: no sample was kept in any perturbation ({key}); it scores 0. "
                                  "Loosen the test's threshold or noise.")
            self.results_consistency_scores[kind] = raw
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                scores = {
                    "IAC_{NR}": np.nan_to_num(np.nanmean(raw["intra_scores_res"], axis=(0, 2))),
                    "IAC_{AR}": np.nan_to_num(np.nanmean(raw["intra_scores_adv"], axis=(0, 2))),
                    "IEC_{NR}": np.nan_to_num(np.nanmean(raw["inter_scores_res"], axis=1)),
                    "IEC_{AR}": np.nan_to_num(np.nanmean(raw["inter_scores_adv"], axis=1)),
                }
            results = {}
            for key, values in scores.items():
                results[f"{key} mean"], results[f"{key} std"] = float(values.mean()), float(values.std())
            stacked = np.array(list(scores.values())).reshape(4, self.iterations)
            self.results_meta_consistency_scores[kind] = {
                "consistency_scores": scores,
                "consistency_results": results,
                "MC_means": stacked.mean(axis=0),
                "MC_mean": float(stacked.mean()),
                "MC_std": float(stacked.mean(axis=0).std()),
            }
        return self.results_meta_consistency_scores

    def summary(self):
        """A DataFrame: perturbation kind x (IAC_NR, IAC_AR, IEC_NR, IEC_AR, MC)."""
        import pandas as pd

        rows = {}
        for kind, r in self.results_meta_consistency_scores.items():
            res = r["consistency_results"]
            rows[kind] = {"IAC_NR": res["IAC_{NR} mean"], "IAC_AR": res["IAC_{AR} mean"],
                          "IEC_NR": res["IEC_{NR} mean"], "IEC_AR": res["IEC_{AR} mean"], "MC": r["MC_mean"]}
        return pd.DataFrame.from_dict(rows, orient="index")
