"""The parts of ``lfeval run`` that need no full run: stored explanations, ranking tables, the stage
store, the metric catalogue and the config's errors."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import lfeval
from lfeval.config import RunConfig, load_plugins
from lfeval.errors import InvalidArgument, RunIncomplete, UnknownName
from lfeval.explain.precomputed import PrecomputedExplanations
from lfeval.metrics import score_direction as direction
from lfeval.metrics.catalogue import CATALOGUE, EXAMPLES, FEATURES, MetricContext, build_metric
from lfeval.pipeline import StageStore
from lfeval.pipeline.outputs import OVERALL, control_methods, control_table, rank_table
from lfeval.pipeline.summary import best_explainers, trusted_metrics


class _Counting:
    def __init__(self):
        self.calls = []

    def __call__(self, model, inputs, targets=None, **kw):
        self.calls.append(kw)
        return lfeval.explain(model, inputs, **kw)


def test_precomputed_serves_stored_and_computes_the_rest(ae, digits):
    x = digits.x_test[:6].numpy()
    fallback = _Counting()
    cache = PrecomputedExplanations(fallback=fallback, method_params={"IntegratedGradients": {"n_steps": 8}})
    a = cache(ae, x, method="IntegratedGradients", seed=0)
    assert fallback.calls == [{"method": "IntegratedGradients", "seed": 0, "n_steps": 8}]
    np.testing.assert_array_equal(a, lfeval.explain(ae, x, method="IntegratedGradients", n_steps=8))
    cache.put(ae, x, a, method="IntegratedGradients", seed=0)
    again = cache(ae, x, method="IntegratedGradients", seed=0, channel_first=True, device="cpu")  # Quantus' extras
    np.testing.assert_array_equal(again, a)
    assert (cache.hits, cache.misses) == (1, 1)
    # any subset, in any order (Quantus' chunks, MetaQuantus' first samples) is served from the stored rows
    np.testing.assert_array_equal(cache(ae, x[[4, 1]], method="IntegratedGradients", seed=0), a[[4, 1]])
    assert (cache.hits, cache.misses) == (2, 1)
    # one new input, another seed, another model: computed, never served from the store
    x_new = np.concatenate([x[:2], digits.x_test[6:7].numpy()])
    np.testing.assert_array_equal(cache(ae, x_new, method="IntegratedGradients", seed=0),
                                  lfeval.explain(ae, x_new, method="IntegratedGradients", n_steps=8))
    cache(ae, x, method="IntegratedGradients", seed=1)
    other = lfeval.models.train_encoder(digits, pretext="reconstruction", latent_dim=8, epochs=1, seed=5,
                                        display_progressbar=False)
    b = cache(other, x, method="IntegratedGradients", seed=0)
    assert cache.misses == 4 and not np.allclose(a, b)
    with pytest.raises(InvalidArgument, match="rows"):
        cache.put(ae, x, a[:2], method="Saliency")


def test_rank_table_known_answer():
    rows = []
    for pretext, (s_ig, s_rand) in {"p1": (3.0, 1.0), "p2": (2.0, 4.0)}.items():
        rows += [{"pretext": pretext, "kind": "features", "method": "IG", "metric": "faith", "score": s_ig},
                 {"pretext": pretext, "kind": "features", "method": "Random", "metric": "faith", "score": s_rand},
                 {"pretext": pretext, "kind": "features", "method": "IG", "metric": "lip", "score": 1.0},
                 {"pretext": pretext, "kind": "features", "method": "Random", "metric": "lip", "score": 2.0}]
    ranks = rank_table(pd.DataFrame(rows), {"faith": "higher", "lip": "lower"})
    r = ranks.set_index(["pretext", "method", "metric"])
    # rank 1 = best: IG has the higher faith on p1, Random on p2
    assert r.loc[("p1", "IG", "faith"), "rank"] == 1 and r.loc[("p1", "Random", "faith"), "rank"] == 2
    assert r.loc[("p2", "IG", "faith"), "rank"] == 2 and r.loc[("p2", "Random", "faith"), "rank"] == 1
    assert r.loc[("p1", "IG", "lip"), "rank"] == 1  # lower is better
    assert r.loc[("p1", "IG", "mean_rank"), "rank"] == 1.0 and r.loc[("p2", "IG", "mean_rank"), "rank"] == 1.5
    # overall: faith normalised (1, 0) and (0, 1) average to a tie; lip favours IG on both encoders
    assert r.loc[(OVERALL, "IG", "faith"), "rank"] == r.loc[(OVERALL, "Random", "faith"), "rank"] == 1.5
    assert r.loc[(OVERALL, "IG", "lip"), "rank"] == 1 and r.loc[(OVERALL, "Random", "lip"), "rank"] == 2
    assert r.loc[(OVERALL, "IG", "mean_rank"), "rank"] == 1.25
    assert r.loc[(OVERALL, "Random", "mean_rank"), "rank"] == 1.75
    summary = best_explainers(ranks, "features")
    assert summary == ("Feature attributions: <b>IG</b> is best overall (mean rank 1.25 of 2 methods over 2 metrics); "
                       "best per encoder: p1 <b>IG</b>, p2 <b>IG</b> and <b>Random</b> (tied).")


def test_rank_table_leaves_control_won_metrics_out_of_the_mean_rank():
    """Random wins "cons" on p1 and overall, and every metric on p2 (the fallback): ranks.csv keeps each
    per-metric rank, flags the won metrics, and averages the mean rank over the others."""
    per = {"p1": {"IG": (0.9, 0.2, 1.0), "Saliency": (0.5, 0.4, 2.0), "Random": (0.1, 1.0, 3.0)},
           "p2": {"IG": (0.5, 0.2, 2.0), "Saliency": (0.1, 0.4, 3.0), "Random": (0.9, 1.0, 1.0)}}
    rows = [{"pretext": p, "kind": "features", "method": m, "metric": metric, "score": v}
            for p, methods in per.items() for m, values in methods.items()
            for metric, v in zip(("faith", "cons", "lip"), values)]
    scores, dirs = pd.DataFrame(rows), {"faith": "higher", "cons": "higher", "lip": "lower"}
    assert control_methods(scores) == ["Random"]  # read from the registry (Random.control), not by name
    ranks = rank_table(scores, dirs, controls=control_methods(scores))
    assert {"kind", "pretext", "method", "metric", "normalised", "rank", "control", "control_wins"} <= set(ranks)
    r = ranks.set_index(["pretext", "method", "metric"])
    assert r.loc[("p1", "Random", "cons"), "rank"] == 1 and r.loc[("p1", "Random", "cons"), "control_wins"]
    assert not r.loc[("p1", "IG", "faith"), "control_wins"] and r.loc[("p1", "Random", "faith"), "control"]
    # p1: the mean rank over faith and lip only (IG 1 and 1, Saliency 2 and 2, Random 3 and 3)
    assert [r.loc[("p1", m, "mean_rank"), "rank"] for m in ("IG", "Saliency", "Random")] == [1.0, 2.0, 3.0]
    assert r.loc[("p1", "IG", "mean_rank"), "normalised"] == 1.0  # faith 1 and lip 1; cons (0) left out
    # p2: Random wins every metric, so nothing is left out (flags stay, for the record)
    assert r.loc[("p2", "Random", "mean_rank"), "rank"] == 1.0 and r.xs("p2")["control_wins"].drop(
        "mean_rank", level="metric").all()
    # overall: averaged normalised cons is Random 1, Saliency 0.25, IG 0 -> flagged; faith and lip are not
    overall = r.xs(OVERALL).xs("IG", level="method")["control_wins"].to_dict()
    assert overall == {"faith": False, "cons": True, "lip": False, "mean_rank": False}
    mean = r.xs(OVERALL).xs("mean_rank", level="metric")["rank"]
    ranked = r.xs(OVERALL).drop("mean_rank", level="metric")["rank"].unstack("metric")
    np.testing.assert_array_equal(mean.loc[ranked.index], ranked[["faith", "lip"]].mean(axis=1))
    assert mean.to_dict() == {"IG": 1.0, "Saliency": 3.0, "Random": 2.0}  # faith and lip average IG .75, Random .5
    # without controls, nothing is flagged and the mean rank is over every metric (the old table)
    plain = rank_table(scores, dirs).set_index(["pretext", "method", "metric"])
    assert not plain["control_wins"].any() and plain.loc[("p1", "IG", "mean_rank"), "rank"] == pytest.approx(5 / 3)
    # the summary and the report's table say which metrics were left out, and where
    summary = best_explainers(ranks, "features")
    assert "over 2 of 3 metrics" in summary
    assert ("The <b>Random</b> control ties or beats every other method on <b>cons</b> (p1 and overall): this "
            "metric cannot tell the explainers from a control, so it is left out of the mean rank there") in summary
    assert "on every metric (p2), so there nothing is left out" in summary
    table = control_table(ranks, "features")
    assert table.loc["p1", "control ties or beats every other method on"] == "cons"
    assert table.loc["p1", "mean rank over"] == "the other 2 of 3 metrics"
    assert table.loc["p2", "mean rank over"].startswith("all 3 metrics")
    # a ranks.csv from before the control columns reads as unflagged
    old = best_explainers(ranks.drop(columns=["control", "control_wins"]), "features")
    assert "control" not in old and "over 3 metrics" in old


def test_trusted_metrics_names_the_highest_mc_per_kind():
    meta = pd.DataFrame({"metric": ["RepresentationShift", "RepresentationShift", "PixelFlipping", "PixelFlipping",
                                    "SimilarityRate", "SimilarityRate"],
                         "test": ["Model", "Input"] * 3, "MC": [0.8, 0.6, 0.9, 0.7, 0.5, 0.7]})
    kinds = {"RepresentationShift": "features", "PixelFlipping": "features", "SimilarityRate": "examples"}
    # means: RepresentationShift 0.70, PixelFlipping 0.80, SimilarityRate 0.60
    assert trusted_metrics(meta, kinds) == (
        "Metrics to trust (highest meta-consistency MC, mean over the Model and Input tests; 1 = ideal): "
        "<b>PixelFlipping</b> for feature attributions (MC 0.80, of 2 meta-evaluated); <b>SimilarityRate</b> for "
        "example importance (MC 0.60, the only one meta-evaluated).")


def test_stage_store_load_names_a_missing_stage(tmp_path):
    store = StageStore(tmp_path / "run", {"seed": 0})
    store.run("a", lambda: {"x": 1}, log=lambda *a: None)
    assert store.load("a") == {"x": 1}
    with pytest.raises(RunIncomplete, match="Stage 'scores-p1' is not stored.*did not finish"):
        store.load("scores-p1")


def test_stage_store_resumes_and_refuses_other_settings(tmp_path):
    calls = []
    store = StageStore(tmp_path / "run", {"seed": 0, "quiet": False})
    assert store.run("a", lambda: calls.append(1) or {"x": 1}, log=lambda *a: None) == {"x": 1}
    again = StageStore(tmp_path / "run", {"seed": 0, "quiet": True})  # a cosmetic difference is fine
    assert again.run("a", lambda: calls.append(2), log=lambda *a: None) == {"x": 1}
    assert calls == [1] and again.loaded == ["a"] and again.computed == []
    with pytest.raises(InvalidArgument, match="seed differ.*--fresh"):
        StageStore(tmp_path / "run", {"seed": 1})


def test_catalogue_builds_every_metric_with_a_valid_direction(encoders, digits):
    ctx = MetricContext(n_features=64, seed=0, y_train=digits.y_train.numpy(), x_train=digits.x_train.numpy(),
                        references={"denoising": encoders["denoising"]}, explain_func=PrecomputedExplanations(),
                        partners=digits.x_test[:4].numpy())
    for name, entry in CATALOGUE.items():
        for kind in entry.kinds:
            metric = build_metric(name, ctx, kind)
            assert direction(metric) in ("higher", "lower"), name
    assert direction(build_metric("PixelFlipping", ctx, FEATURES)) == "lower"
    assert direction(build_metric("RepresentationShift", ctx, FEATURES)) == "higher"
    assert direction(build_metric("MaxSensitivity", ctx, FEATURES)) == "lower"


#: the attribution that should score well on each catalogue metric (against the Random control): IntegratedGradients
#: for the removal / faithfulness metrics (it is complete: its sum is the drop of g_x to the baseline), Saliency for
#: the robustness and complexity metrics (a smooth, deterministic gradient; IG's path sum moves more under noise) and
#: for ROAD, COCOA for COCOA's own corpus curves; PretextCorrelation is checked against known values instead
ORACLE = {**dict.fromkeys(("MaxSensitivity", "AvgSensitivity", "RelativeInputStability",
                           "RelativeRepresentationStability", "Sparseness", "Complexity", "ROAD"), "Saliency"),
          **dict.fromkeys(("CorpusInsertion", "CorpusDeletion", "CorpusMajorityInsertion", "CorpusMajorityDeletion"),
                          "COCOA")}


def _catalogue_scores(name, kind, ctx, enc, x, y, methods):
    """{method: per-sample scores} of one catalogue metric, the same random state for every method (paired draws)."""
    out = {}
    for method, value in methods.items():
        np.random.seed(0)
        res = lfeval.evaluate({name: build_metric(name, ctx, kind)}, {method: value}, enc, x, agg_func=np.asarray,
                              return_as_df=False, y_batch=y if kind != FEATURES else None)
        out[method] = np.asarray(res[method][name], dtype=float)
        assert out[method].size and np.isfinite(out[method]).all(), (name, kind, method, out[method])
    return out


def test_every_catalogue_metric_ranks_an_oracle_above_random_on_a_digits_encoder(encoders, digits):
    """Each metric of the catalogue, built with its run defaults, scores an attribution that should do well better
    than the Random control in the metric's own direction (mean over 12 digits), through lfeval.evaluate; the
    example metrics rank the latent cosine importance above a random matrix. PretextCorrelation cannot separate
    them (Random ignores the model, so every encoder gets the same map: 1 by construction): known values instead.
    The pair metrics get each input as its own partner: s(a, b) with b = a fixed is g_x, so the cached g_x
    attributions are exactly the pair attributions they score."""
    enc, ref, x, y = encoders["reconstruction"], encoders["denoising"], digits.x_test[:12].numpy(), digits.y_test[:12]
    x_train = digits.x_train[:100]
    cache = PrecomputedExplanations(method_params={"COCOA": {"x_train": x_train.numpy()}})
    ctx = MetricContext(n_features=64, seed=0, y_train=digits.y_train[:100].numpy(), x_train=x_train.numpy(),
                        references={"denoising": ref}, explain_func=cache, partners=x,
                        example_explain_func=functools.partial(lfeval.explain.examples.explain_func, x_train=x_train))
    for method in ("Saliency", "IntegratedGradients", "COCOA", "Random"):  # explained once, served to every metric
        cache.put(enc, x, cache(enc, x, method=method), method=method)
    random_importance = np.random.default_rng(0).random((len(x), len(x_train))).astype(np.float32)
    checked = set()
    for name, entry in CATALOGUE.items():
        for kind in entry.kinds:
            if name == "PretextCorrelation":
                continue
            oracle = ORACLE.get(name, "IntegratedGradients") if kind == FEATURES else "cosine"
            methods = ({oracle: cache, "Random": cache} if kind == FEATURES else
                       {oracle: ctx.example_explain_func, "Random": random_importance})
            s = _catalogue_scores(name, kind, ctx, enc, x, y.numpy(), methods)
            good, bad = s[oracle].mean(), s["Random"].mean()
            higher = direction(build_metric(name, ctx, kind)) == "higher"
            assert (good > bad) if higher else (good < bad), (name, kind, oracle, good, bad)
            checked.add(name)
    # PretextCorrelation: Random ignores the model (exactly 1); Saliency and cosine give scipy's per-sample Pearson r
    for kind, oracle, func in ((FEATURES, "Saliency", cache), (EXAMPLES, "cosine", ctx.example_explain_func)):
        methods = {oracle: func, "Random": cache} if kind == FEATURES else {oracle: func}
        s = _catalogue_scores("PretextCorrelation", kind, ctx, enc, x, y.numpy(), methods)
        a, a_ref = (np.abs(np.asarray(func(e, x, method=oracle), dtype=float)) for e in (enc, ref))
        expected = [scipy.stats.pearsonr(a[i].ravel(), a_ref[i].ravel())[0] for i in range(len(x))]
        np.testing.assert_allclose(s[oracle], expected, atol=1e-5)
        assert np.ptp(expected) > 0.05  # a per-sample value, not a constant
        if kind == FEATURES:
            np.testing.assert_allclose(s["Random"], 1.0, atol=1e-6)
    assert checked | {"PretextCorrelation"} == set(CATALOGUE)


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(UnknownName, match="Did you mean 'IntegratedGradients'"):
        RunConfig(explainers=["IntegratedGradient"])
    with pytest.raises(UnknownName, match="Did you mean 'RepresentationShift'"):
        RunConfig(metrics=["RepresentationShfit"])
    with pytest.raises(UnknownName, match="config `data`. Did you mean 'digits'"):
        RunConfig(data="digts")
    with pytest.raises(UnknownName, match="Did you mean 'meta_iterations'"):
        RunConfig.from_dict({"meta_iteration": 2})
    with pytest.raises(InvalidArgument, match="unknown parameter 'nr_run'. Did you mean 'nr_runs'"):
        RunConfig(metric_params={"FaithfulnessCorrelation": {"nr_run": 5}})
    with pytest.raises(InvalidArgument, match="at least two `pretexts`"):
        RunConfig(pretexts=["reconstruction"])
    with pytest.raises(UnknownName, match="explainer_params"):
        RunConfig(explainers=["Saliency"], meta_metrics=[], explainer_params={"IntegratedGradients": {"n_steps": 8}})
    with pytest.raises(InvalidArgument, match="at least two in `meta_explainers`"):
        RunConfig(explainers=["Saliency"])
    with pytest.raises(InvalidArgument, match="at least two in `example_methods`"):
        RunConfig(example_methods=["cosine"], meta_metrics=["SimilarityRate"])
    RunConfig(metric_params={"FaithfulnessCorrelation": {"nr_runs": 5, "similarity": "cosine"}})  # valid


def test_config_resolves_threads_once_and_checks_integers_with_the_config_key():
    """``threads`` is resolved in one place (a digit string, as from ``--threads``, becomes an int); integer keys
    refuse bools and floats and name the key; the "did you mean" of the config keys is the registry's."""
    assert RunConfig(threads="2").threads == 2 and RunConfig(threads=" Auto ").threads == "auto"
    for value in (0, True, 1.5, "two"):
        with pytest.raises(InvalidArgument, match="Config `threads` must be 'auto' or a positive integer"):
            RunConfig(threads=value)
    for key, value, minimum in (("latent_dim", 0, 1), ("n_explain", True, 2), ("epochs", 2.0, 1), ("seed", -1, 0)):
        with pytest.raises(InvalidArgument, match=rf"Config `{key}` must be an integer >= {minimum}, got"):
            RunConfig(**{key: value})
    with pytest.raises(InvalidArgument, match=r"`features_in_step` must be an integer >= 1 that divides"):
        RunConfig(metric_params={"PixelFlipping": {"features_in_step": True}})
    with pytest.raises(UnknownName, match=r"Unknown config key 'threds'. Did you mean 'threads'\? Valid keys: "):
        RunConfig.from_dict({"threds": 1})


GRADIENT_DELTA = str(Path(__file__).parent / "extensions" / "gradient_delta.py")
#: a fresh process (as a Ray worker) unpickles a config: the plugin's explainer is unknown until load_plugins
UNPICKLE = """
import pickle, sys
from lfeval.config import RunConfig, load_plugins, plugin_loaded
from lfeval.errors import UnknownName
from lfeval.explain.base import EXPLAINERS
config = pickle.loads(open(sys.argv[1], "rb").read())
known = "GradientDelta" in EXPLAINERS
try:
    RunConfig(plugins=config.plugins, explainers=["GradientDelta", "Random"])
except UnknownName as exc:
    said = "not loaded yet" in str(exc) and "load_plugins" in str(exc)
print(known, said, plugin_loaded(config.plugins[0]))
load_plugins(config.plugins)
load_plugins(config.plugins)  # idempotent
print(EXPLAINERS.get("GradientDelta").__name__, plugin_loaded(config.plugins[0]))
RunConfig(plugins=config.plugins, explainers=["GradientDelta", "Random"])
"""


def test_plugins_load_in_one_explicit_step_also_in_a_fresh_process(tmp_path):
    """``RunConfig(...)`` imports nothing; ``from_dict`` loads the plugins first; a process that unpickles a
    config (a Ray worker) knows a plugin's explainer once :func:`lfeval.config.load_plugins` ran there."""
    from lfeval.explain.base import EXPLAINERS

    loaded = "lfeval_plugin_gradient_delta" in sys.modules
    try:
        config = RunConfig.from_dict({"plugins": [GRADIENT_DELTA], "explainers": ["GradientDelta", "Random"]})
        assert load_plugins(config.plugins) == (GRADIENT_DELTA,)
        (tmp_path / "config.pkl").write_bytes(pickle.dumps(config))
        done = subprocess.run([sys.executable, "-c", UNPICKLE, str(tmp_path / "config.pkl")], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["False", "True", "False", "GradientDelta", "True"], done.stdout
    finally:
        if not loaded:  # leave the registry as the other tests expect it
            EXPLAINERS.pop("GradientDelta", None)
            sys.modules.pop("lfeval_plugin_gradient_delta", None)
