"""lfeval.meta: label-free perturbation tests and LabelFreeMetaEvaluation on real digits encoders.

What must hold (issue 6): attribution-only metrics no longer get MC = 0.5 on the input tests;
RepresentationShift beats a random-score control; agreement with stock MetaQuantus on a classifier
with its own tests; same seed -> same numbers; clear errors; a resumable benchmarking grid.
"""

from __future__ import annotations

import copy
import json
import warnings

import metaquantus
import numpy as np
import pandas as pd
import pytest
import quantus
import scipy.stats
import torch

import lfeval
from lfeval.errors import InvalidArgument, ModelStateError, UnknownName
from lfeval.meta import (
    LabelFreeMetaEvaluation,
    LatentInputPerturbationTest,
    LatentModelPerturbationTest,
    benchmark,
    default_test_suite,
    lower_is_better,
)
from lfeval.metrics import RepresentationShift

METHODS = {"Saliency": {}, "IntegratedGradients": {"n_steps": 8}, "Random": {}}


class RandomScore(quantus.Metric):
    """A control metric that ignores the explanation: i.i.d. uniform scores, a fresh draw per call."""

    name = "RandomScore"
    data_applicability = {quantus.helpers.enums.DataType.IMAGE}
    model_applicability = {quantus.helpers.enums.ModelType.TORCH}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.NONE

    def __init__(self, seed: int = 0):
        super().__init__(abs=False, normalise=False, normalise_func=None, normalise_func_kwargs=None,
                         return_aggregate=False, aggregate_func=None, default_plot_func=None,
                         disable_warnings=True, display_progressbar=False)
        self.rng = np.random.default_rng(seed)

    def __call__(self, model, x_batch, y_batch=None, a_batch=None, **kwargs):
        return self.rng.uniform(size=len(x_batch))


def _meta(suite=None, iterations=2, k=3, seed=0, methods=METHODS):
    return LabelFreeMetaEvaluation(suite or default_test_suite(seed=seed), methods, iterations=iterations,
                                   nr_perturbations=k, seed=seed, display_progressbar=False)


@pytest.fixture(scope="module")
def x_small(digits):
    return digits.x_test[:48].numpy()


@pytest.fixture(scope="module")
def rs_meta(ae, x_small):
    meta = _meta()
    meta(RepresentationShift(fractions=(0.1, 0.3, 0.6), baseline=0.0), ae, x_small)
    return meta


# --------------------------------------------------------------------------- perturbation tests
def test_tests_keep_by_latent_closeness_and_explain_the_perturbed_input(ae, x_small):
    seen = []

    def explain_func(model, inputs, targets=None, **kwargs):
        seen.append(inputs.copy())
        return lfeval.explain(model, inputs, **kwargs)

    metric = RepresentationShift(fractions=(0.2, 0.5), baseline=0.0)
    test = LatentInputPerturbationTest("Resilience", noise=0.2, threshold=0.99, seed=3)
    scores, closeness, keep = test(estimator=metric, nr_perturbations=2, xai_methods={"Saliency": {}}, model=ae,
                                   x_batch=x_small, y_batch=None, a_batch=None, s_batch=None, channel_first=True,
                                   explain_func=explain_func, model_predict_kwargs={}, softmax=False, device=None)
    assert scores["Saliency"].shape == closeness.shape == keep.shape == (2, len(x_small))
    np.testing.assert_array_equal(keep, closeness >= 0.99)  # resilience: kept while the latent stays close
    assert 0 < keep.mean() < 1 and test.fraction_kept == [pytest.approx(keep.mean())]
    for x_p in seen:  # the perturbed input was explained, and it stays within the clean data's range
        assert not np.allclose(x_p, x_small)
        assert x_p.min() >= x_small.min() and x_p.max() <= x_small.max()
        assert np.abs(x_p - x_small).max() <= 0.2 + 1e-6

    adv = LatentModelPerturbationTest("adversary", std=0.5, threshold=0.95, seed=3)
    before = {k: v.clone() for k, v in ae.state_dict().items()}  # the weights before the model perturbations
    _, closeness, keep = adv(estimator=metric, nr_perturbations=1, xai_methods={"Saliency": {}}, model=ae,
                             x_batch=x_small, y_batch=None, a_batch=None, s_batch=None, channel_first=True,
                             explain_func=lfeval.explain, model_predict_kwargs={}, softmax=False, device=None)
    np.testing.assert_array_equal(keep, closeness < 0.95)  # adversary: kept once the latent moved away
    after = ae.state_dict()  # the perturbations act on a copy: the encoder itself is untouched
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_knn_and_callable_keep_rules(ae, digits, x_small):
    with torch.no_grad():
        bank = ae(digits.x_train[:300])
    knn = LatentModelPerturbationTest("Resilience", std=0.0, keep="knn", bank=bank, k=5, threshold=1.0)
    z = ae(torch.as_tensor(x_small)).detach()
    assert knn.close(z, z).all()  # identical latents share every neighbour
    far = knn.close(z, z.flip(0))
    assert not far.all()
    always = LatentInputPerturbationTest("Adversary", keep=lambda z, zp: np.zeros(len(z), bool))
    assert not always.close(z, z).any()


def test_few_kept_samples_warn(ae, x_small):
    test = LatentInputPerturbationTest("Adversary", noise=0.01, threshold=0.0)  # nothing moves that far
    with pytest.warns(UserWarning, match="Wilcoxon"):
        test(estimator=RepresentationShift(fractions=(0.2, 0.5), baseline=0.0), nr_perturbations=1,
             xai_methods={"Saliency": {}}, model=ae, x_batch=x_small, y_batch=None, a_batch=None, s_batch=None,
             channel_first=True, explain_func=lfeval.explain, model_predict_kwargs={}, softmax=False, device=None)


# --------------------------------------------------------------------------- meta-evaluation
def _reference_criteria(meta, kind: str, lower: bool) -> dict:
    """IAC_NR, IAC_AR, IEC_NR, IEC_AR per iteration, written out from the raw scores and kept samples
    (Hedström et al. 2023): the IAC is scipy's Wilcoxon p-value (AR: 1 - p) of the unperturbed against the
    perturbed scores on the kept samples, averaged over methods and perturbations; IEC_NR the share of (kept sample,
    rank) where the methods' per-sample ranking is unchanged; IEC_AR the share of (method, kept sample) whose score
    got worse. A perturbation that keeps no sample is left out."""
    methods = list(meta.xai_methods)
    out = {}
    for test, nr, ar in ((f"{kind} Resilience Test", "IAC_{NR}", "IEC_{NR}"),
                         (f"{kind} Adversary Test", "IAC_{AR}", "IEC_{AR}")):
        q = meta.results_eval_scores[test]
        iac, iec = [], []
        for i in range(meta.iterations):
            p_values, agreement = [], []
            for k in range(meta.nr_perturbations):
                keep = np.asarray(meta.results_indices_perturbed[test][i][k], dtype=bool)
                if not keep.any():
                    continue
                q_hat = {m: meta.results_eval_scores_perturbed[test][i][m][k] for m in methods}
                for m in methods:
                    p = scipy.stats.wilcoxon(q[m][keep], q_hat[m][keep], zero_method="zsplit").pvalue
                    p_values.append(1 - p if test.endswith("Adversary Test") else p)
                before = np.array([q[m][keep] for m in methods])
                after = np.array([q_hat[m][keep] for m in methods])
                if test.endswith("Adversary Test"):
                    worse = after > before if lower else after < before
                    agreement.append(worse.mean())
                else:
                    ranks = [(scipy.stats.rankdata(before[:, j], method="ordinal")
                              == scipy.stats.rankdata(after[:, j], method="ordinal")).mean()
                             for j in range(before.shape[1])]
                    agreement.append(np.mean(ranks))
            iac.append(np.mean(p_values))
            iec.append(np.mean(agreement))
        out[nr], out[ar] = np.array(iac), np.array(iec)
    return {key: out[key] for key in ("IAC_{NR}", "IAC_{AR}", "IEC_{NR}", "IEC_{AR}")}


def test_result_layout_matches_metaquantus(rs_meta):
    meta = rs_meta
    assert isinstance(meta, metaquantus.MetaEvaluation)
    assert set(meta.results_meta_consistency_scores) == {"Model", "Input"}
    for kind, r in meta.results_meta_consistency_scores.items():
        assert set(r) >= {"consistency_scores", "consistency_results", "MC_means", "MC_mean", "MC_std"}
        assert r["MC_means"].shape == (2,)  # one per iteration
        assert 0.0 <= r["MC_mean"] <= 1.0
        # against the criteria recomputed from the raw scores with scipy.stats.wilcoxon and per-sample ranks
        ref = _reference_criteria(meta, kind, lower=False)
        for key, values in ref.items():
            np.testing.assert_allclose(r["consistency_scores"][key], values, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(r["MC_means"], np.mean(list(ref.values()), axis=0), atol=1e-12)
        assert r["MC_mean"] == pytest.approx(np.mean(list(ref.values())), abs=1e-12)
        # the IAC_AR std is the std of IAC_AR over iterations (MetaQuantus reported the IAC_NR std)
        res = r["consistency_results"]
        assert res["IAC_{AR} std"] == pytest.approx(float(np.std(ref["IAC_{AR}"])), abs=1e-12)
        assert res["IAC_{AR} std"] != pytest.approx(float(np.std(ref["IAC_{NR}"])), abs=1e-6)
    table = meta.summary()
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"]
    assert np.isfinite(table.to_numpy()).all()


def test_same_seed_same_numbers(ae, x_small, rs_meta):
    again = _meta()
    again(RepresentationShift(fractions=(0.1, 0.3, 0.6), baseline=0.0), ae, x_small)
    pd.testing.assert_frame_equal(again.summary(), rs_meta.summary())
    other = _meta(seed=5)
    other(RepresentationShift(fractions=(0.1, 0.3, 0.6), baseline=0.0), ae, x_small)
    assert not np.allclose(other.summary().to_numpy(), rs_meta.summary().to_numpy())


def test_representation_shift_beats_a_random_control(ae, digits, rs_meta):
    control = _meta()
    control(RandomScore(seed=0), ae, digits.x_test[:48].numpy(), score_direction="higher")
    mc_rs, mc_random = rs_meta.summary()["MC"], control.summary()["MC"]
    assert (mc_rs > mc_random + 0.05).all(), (mc_rs, mc_random)


def test_sparseness_no_longer_scores_exactly_half_on_the_input_tests(ae, x_small):
    """MetaQuantus' input test explained clean x, so an attribution-only metric never moved: MC = 0.5."""
    meta = _meta(methods={"Saliency": {}, "IntegratedGradients": {"n_steps": 8}})
    meta(quantus.Sparseness(disable_warnings=True), ae, x_small)
    assert abs(meta.summary().loc["Input", "MC"] - 0.5) > 0.02


def test_no_kept_sample_gives_no_nan(ae, x_small):
    suite = {
        "Input Resilience Test": LatentInputPerturbationTest("Resilience", noise=0.01, threshold=0.99),
        "Input Adversary Test": LatentInputPerturbationTest("Adversary", noise=0.01, threshold=-1.0),
    }
    meta = _meta(suite=suite, iterations=1, k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta(RepresentationShift(fractions=(0.2, 0.5), baseline=0.0), ae, x_small)
    assert np.isfinite(meta.summary().to_numpy()).all()
    assert meta.summary().loc["Input", "IAC_AR"] == 0.0


def test_agrees_with_stock_metaquantus_on_a_classifier(encoders, digits):
    """Stock tests, a classifier, seed 0 and the direction as a bool: the same IAC/IEC/MC as stock MetaEvaluation.

    Sparseness is used because stock MetaQuantus scores it with no NaN (so no bug fix applies) and
    Saliency/IntegratedGradients via quantus.explain are deterministic.
    """
    clf = encoders["classification"].pretext_model.eval()
    x, y = digits.x_test[:32].numpy(), digits.y_test[:32].numpy()
    methods = {"Saliency": {}, "IntegratedGradients": {"n_steps": 8}}

    def suite():
        return {
            "Model Resilience Test": metaquantus.ModelPerturbationTest(noise_type="multiplicative", mean=1.0,
                                                                       std=0.001, type="Resilience"),
            "Model Adversary Test": metaquantus.ModelPerturbationTest(noise_type="multiplicative", mean=1.0,
                                                                      std=2.0, type="Adversary"),
        }

    def run(cls, **extra):
        torch.manual_seed(0)
        np.random.seed(0)
        meta = cls(test_suite=suite(), xai_methods=methods, iterations=2, nr_perturbations=2,
                   explain_func=quantus.explain, write_to_file=False, **extra)
        meta(estimator=quantus.Sparseness(disable_warnings=True), model=clf, x_batch=x, y_batch=y, a_batch=None,
             s_batch=None, channel_first=True, softmax=False, device="cpu", score_direction=False)
        return meta

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = run(metaquantus.MetaEvaluation, sanity_check=None, print_results=False)
        ours = run(LabelFreeMetaEvaluation, seed=0, display_progressbar=False)
    s, o = stock.results_meta_consistency_scores["Model"], ours.results_meta_consistency_scores["Model"]
    assert o["MC_mean"] == pytest.approx(s["MC_mean"], abs=1e-12)
    for key in ("IAC_{NR}", "IAC_{AR}", "IEC_{NR}", "IEC_{AR}"):
        np.testing.assert_allclose(o["consistency_scores"][key], s["consistency_scores"][key], atol=1e-12)
    # the one documented difference: the IAC_AR std
    # (stock's own IAC_AR values, equal to ours above, give the reference)
    assert o["consistency_results"]["IAC_{AR} std"] == pytest.approx(float(np.std(s["consistency_scores"]["IAC_{AR}"])),
                                                                     abs=1e-12)


# --------------------------------------------------------------------------- errors
def test_bad_input_gets_clear_errors(ae, x_small):
    with pytest.raises(UnknownName, match="Model Resilience Test"):
        LabelFreeMetaEvaluation({"Model Resilence Test": LatentModelPerturbationTest()}, METHODS)
    with pytest.raises(UnknownName, match="Resilience"):
        LatentModelPerturbationTest("Robustness")
    with pytest.raises(InvalidArgument, match="threshold"):
        LatentModelPerturbationTest("Resilience", threshold=1.5)
    with pytest.raises(InvalidArgument, match="threshold"):
        LatentInputPerturbationTest("Resilience", keep="knn", bank=np.zeros((4, 2)), threshold=-0.1)
    with pytest.raises(InvalidArgument, match="bank"):
        LatentInputPerturbationTest("Resilience", keep="knn")
    with pytest.raises(InvalidArgument, match="score_direction"):
        lower_is_better("up")
    assert lower_is_better("lower") is True and lower_is_better("higher") is False and lower_is_better(True) is True

    class NoDirection(RandomScore):
        score_direction = None

    with pytest.raises(InvalidArgument, match="score_direction"):
        _meta(iterations=1, k=1)(NoDirection(), ae, x_small)
    train_mode = copy.deepcopy(ae).train()
    with pytest.raises(ModelStateError, match="eval"):
        _meta(iterations=1, k=1)(RepresentationShift(fractions=(0.2, 0.5)), train_mode, x_small)


# --------------------------------------------------------------------------- benchmarking grid
def test_benchmark_grid_writes_cells_and_resumes(ae, encoders, x_small, tmp_path):
    grid = {"digits": {"x": x_small[:24], "encoders": {"reconstruction": ae, "denoising": encoders["denoising"]}}}
    metrics = {"RS": RepresentationShift(fractions=(0.2, 0.5), baseline=0.0)}
    methods = {"Saliency": {}, "Random": {}}
    table = benchmark(grid, metrics, methods, tmp_path, iterations=1, nr_perturbations=2, display_progressbar=False)
    assert set(table["encoder"]) == {"reconstruction", "denoising"} and set(table["test"]) == {"Model", "Input"}
    assert np.isfinite(table[["IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"]].to_numpy()).all()
    cells = sorted(tmp_path.glob("*.json"))
    assert len(cells) == 2
    # a finished cell is read back, not recomputed: tamper with one and see it come back as stored
    stored = json.loads(cells[0].read_text())
    stored[0]["MC"] = -1.0
    cells[0].write_text(json.dumps(stored))
    again = benchmark(grid, metrics, methods, tmp_path, iterations=1, nr_perturbations=2, display_progressbar=False)
    assert (again["MC"] == -1.0).sum() == 1
    pd.testing.assert_frame_equal(again[again["MC"] != -1.0].reset_index(drop=True),
                                  table[again["MC"] != -1.0].reset_index(drop=True))
    with pytest.raises(InvalidArgument):
        benchmark({}, metrics, methods, tmp_path)


def test_example_metric_meta_evaluated_with_score_labels(ae, digits):
    """SimilarityRate needs labels to score: score_labels hands them over without a classifier's argmax."""
    import functools

    from lfeval.errors import LabelsRequired
    from lfeval.metrics import SimilarityRate

    x, y = digits.x_test[:48].numpy(), digits.y_test[:48].numpy()
    explain = functools.partial(lfeval.explain.examples.explain_func, x_train=digits.x_train[:300])
    metric = SimilarityRate(digits.y_train[:300].numpy(), M=[1, 5, 10])
    meta = LabelFreeMetaEvaluation(default_test_suite(seed=0), {"cosine": {}, "dknn": {}}, iterations=1,
                                   nr_perturbations=2, explain_func=explain, seed=0, display_progressbar=False)
    summary = meta(metric, ae, x, score_labels=y).summary()
    assert np.isfinite(summary.to_numpy()).all() and summary["MC"].between(0, 1).all()
    # tiny input noise keeps the neighbours: the per-sample ranking of the two methods barely moves
    assert summary.loc["Input", "IEC_NR"] > 0.8
    with pytest.raises(LabelsRequired):
        meta(metric, ae, x)
    with pytest.raises(InvalidArgument, match="not both"):
        meta(metric, ae, x, y_batch=y, score_labels=y)
    with pytest.raises(InvalidArgument, match="shape"):
        meta(metric, ae, x, score_labels=y[:5])
