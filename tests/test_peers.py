"""The peers' explainers and metrics: RELAX (against relax-xai), COCOA (its target, corpus rules and evaluation),
the insertion / LeRF twins of RepresentationShift, the fully label-free similarity rates, their MetaQuantus
meta-evaluation and their place in ``lfeval run``."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from relax_xai import masking_functions as relax_masking
from relax_xai import relax as relax_module
from torch import nn

import lfeval
from lfeval.cli import main
from lfeval.errors import InvalidArgument
from lfeval.explain.corpus import Corpus
from lfeval.explain.relax import RELAX, relax_masks
from lfeval.explain.stochastic import random_attribution
from lfeval.meta import LabelFreeMetaEvaluation, default_test_suite
from lfeval.metrics import (
    CATALOGUE,
    CorpusDeletion,
    CorpusInsertion,
    LabelFreeSimilarityRate,
    MetricContext,
    RepresentationShift,
    RepresentationShiftInsertion,
    RepresentationShiftLeRF,
    SimilarityRate,
    build_metric,
)
from lfeval.metrics.catalogue import EXAMPLES, FEATURES
from lfeval.metrics.functional import contrastive_similarity, ordered_masks, step_counts

PEER_FEATURE_METRICS = ["RepresentationShiftInsertion", "RepresentationShiftLeRF", "CorpusInsertion", "CorpusDeletion",
                        "CorpusMajorityInsertion", "CorpusMajorityDeletion"]
PEER_EXAMPLE_METRICS = ["LabelFreeSimilarityRate", "NeighbourhoodRate"]


# ---------------------------------------------------------------------------------------------- RELAX
def test_relax_masks_and_importance_agree_with_relax_xai(ae, digits):
    """The paper's mask generator draws the same masks as relax-xai after the same seed, and with the same masks
    the importance (and the normalised uncertainty) equal relax-xai's per-image loop."""
    torch.manual_seed(5)
    theirs = next(relax_masking.mask_generator(64, (8, 8), "cpu"))
    np.testing.assert_array_equal(relax_masks(64, (8, 8), seed=5).numpy(), theirs.numpy())

    x, n_masks, block = digits.x_test[:3], 300, 100
    importance, uncertainty = RELAX(ae).attribute(x, n_masks=n_masks, seed=1, batch_size=4096,
                                                  return_uncertainty=True)
    masks = relax_masks(n_masks, (8, 8), seed=1)
    original = relax_module.mask_generator
    try:
        for i in range(len(x)):
            blocks = iter(masks.split(block))
            relax_module.mask_generator = lambda *args, **kw: iter([next(blocks)])  # relax-xai, fed our masks
            with torch.no_grad():
                reference = relax_module.RELAX(x[i:i + 1], ae, batch_size=block, num_batches=n_masks // block)
                reference.forward()
            np.testing.assert_allclose(importance[i, 0].numpy(), reference.importance.numpy(), atol=1e-5)
            np.testing.assert_allclose(uncertainty[i, 0].numpy(),
                                       (reference.uncertainty / reference.sum_of_weights).numpy(), atol=1e-5)
    finally:
        relax_module.mask_generator = original


def test_relax_known_answer_seed_and_batch_invariance(digits, ae):
    """f reads feature 0 only, so a mask's similarity is 1 when it keeps feature 0 and 0 otherwise: the importance
    of feature 0 is 1 with no uncertainty, and every other feature's variance is r(1 - r) of its mean r."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 2, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [2.0, 0, 0, 0, 0, 0]]))
    x = torch.rand(4, 1, 6) + 0.5
    r, u = RELAX(net).attribute(x, n_masks=400, return_uncertainty=True)
    np.testing.assert_allclose(r[:, 0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(u[:, 0, 0], 0.0, atol=1e-6)
    assert ((r[:, 0, 1:] > 0.4) & (r[:, 0, 1:] < 0.6)).all()
    np.testing.assert_allclose(u[:, 0, 1:], r[:, 0, 1:] * (1 - r[:, 0, 1:]), atol=1e-6)

    x = digits.x_test[:5]
    kw = {"method": "RELAX", "n_masks": 200}
    a = lfeval.explain(ae, x, seed=3, **kw)
    np.testing.assert_array_equal(a, lfeval.explain(ae, x, seed=3, **kw))
    assert not np.allclose(a, lfeval.explain(ae, x, seed=4, **kw))
    alone = np.concatenate([lfeval.explain(ae, x[i:i + 1], seed=3, batch_size=37, **kw) for i in range(5)])
    np.testing.assert_allclose(a, alone, atol=1e-5)
    with pytest.raises(InvalidArgument, match="num_cells"):
        lfeval.explain(ae, x, method="RELAX", num_cells=17)


# ---------------------------------------------------------------------------------------------- COCOA
def test_cocoa_attributes_the_contrastive_corpus_similarity(ae, digits):
    pool, x = digits.x_train[:300], digits.x_test[:6]
    fitted = Corpus(pool, n_clusters=5, corpus_seed=0).fit(ae)
    with torch.no_grad():
        z, h = ae(x), ae(pool)
    groups = fitted.groups(z)
    cos = nn.functional.cosine_similarity
    for i in range(len(x)):  # the target is mean cosine to the corpus minus mean cosine to the foil
        c, f = fitted.corpora[groups[i]], fitted.foils[groups[i]]
        expected = cos(z[i:i + 1], h[c]).mean() - cos(z[i:i + 1], h[f]).mean()
        got = contrastive_similarity(z[i:i + 1].double(), fitted.targets[groups[i]])
        np.testing.assert_allclose(float(got), float(expected), atol=1e-5)
        assert set(fitted.corpora[groups[i]].tolist()) <= set(torch.cdist(h.double(), fitted.centroids).argmin(1)
                                                              .eq(groups[i]).nonzero().flatten().tolist())
    # COCOA with Saliency = the gradient of <f(x')/|f(x')|, t> at x
    a = lfeval.explain(ae, x, method="COCOA", inner="Saliency", x_train=pool, n_clusters=5, seed=0)
    xr = x.clone().requires_grad_(True)
    g = (nn.functional.normalize(ae(xr), dim=1) * fitted.targets[groups].float()).sum()
    (grad,) = torch.autograd.grad(g, xr)
    np.testing.assert_allclose(a, grad.abs().numpy(), atol=1e-6)


def test_corpus_rules_by_label_and_by_index(ae, digits):
    pool, y = digits.x_train[:300], digits.y_train[:300]
    fitted = Corpus(pool, by="label", y_train=y, label=3).fit(ae)
    corpus, foil = fitted.corpora[int(fitted.groups(ae(digits.x_test[:1]))[0])], fitted.foils[3]
    assert (y[corpus] == 3).all() and (y[foil] != 3).all() and len(corpus) == min(100, int((y == 3).sum()))
    voted = Corpus(pool, by="label", y_train=y).fit(ae)  # each explicand's k-NN class
    with torch.no_grad():
        predicted = voted.groups(ae(digits.x_test[:100]))
    assert (voted.group_of_class[predicted] == digits.y_test[:100]).float().mean() > 0.8
    index = Corpus(pool, by="index", corpus_index=[4, 8, 15, 16, 23, 42], foil_size=50).fit(ae)
    assert sorted(index.corpora[0].tolist()) == [4, 8, 15, 16, 23, 42]
    assert len(index.foils[0]) == 50 and not set(index.foils[0].tolist()) & {4, 8, 15, 16, 23, 42}
    with pytest.raises(InvalidArgument, match="y_train"):
        Corpus(pool, by="label")
    with pytest.raises(InvalidArgument, match="x_train"):
        lfeval.explain(ae, digits.x_test[:2], method="COCOA")
    with pytest.raises(InvalidArgument, match="n_step"):
        lfeval.explain(ae, digits.x_test[:2], method="COCOA", x_train=pool, n_step=3)


def test_relax_and_cocoa_beat_random_on_representation_shift(ae, digits):
    x, pool = digits.x_test[:64].numpy(), digits.x_train[:300].numpy()
    metric = RepresentationShift()
    random = np.mean(metric(ae, x, a_batch=lfeval.explain(ae, x, method="Random")))
    for method, kw in (("RELAX", {"n_masks": 500, "batch_size": 8192}), ("COCOA", {"x_train": pool})):
        score = np.mean(metric(ae, x, a_batch=lfeval.explain(ae, x, method=method, **kw)))
        assert score > 1.3 * random, (method, score, random)


# ---------------------------------------------------------------------------------------------- insertion curves
def test_orders_and_step_counts():
    imp = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    counts = torch.tensor([1, 3])
    assert ordered_masks(imp, counts, "deletion").int().tolist() == [[[0, 1, 0, 0], [0, 1, 1, 1]]]
    assert ordered_masks(imp, counts, "insertion").int().tolist() == [[[1, 0, 1, 1], [1, 0, 0, 0]]]
    assert ordered_masks(imp, counts, "lerf").int().tolist() == [[[1, 0, 0, 0], [1, 0, 1, 1]]]
    assert step_counts(64, 50).tolist()[:3] == [0, 2, 4] and step_counts(64, 50)[-1] == 64
    assert len(step_counts(64, 50)) == 51 and (step_counts(64, 50).diff() >= 1).all()


@pytest.fixture(scope="module")
def reader():
    """A hand-built encoder that reads only features 0-3 of 12 (tabular rows), inputs in [0.5, 1], the oracle
    attribution (1 on the read features, 0 elsewhere) and a pool for COCOA's corpus."""
    torch.manual_seed(0)
    w = torch.zeros(3, 12)
    w[:, :4] = torch.randn(3, 4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(w)
    x = (torch.rand(60, 1, 12) * 0.5 + 0.5).numpy()
    oracle = np.zeros_like(x)
    oracle[..., :4] = 1.0 + np.arange(4)[::-1] * 0.01  # ties broken, all relevant features ahead of the rest
    random = random_attribution(torch.as_tensor(x)).abs().numpy()
    pool = (torch.rand(200, 1, 12) * 0.5 + 0.5).numpy()
    return net, x, oracle, random, pool


@pytest.mark.parametrize("metric", [
    RepresentationShift(fractions=(0.1, 0.25, 0.5, 0.75, 1.0)),
    RepresentationShiftInsertion(fractions=(0.1, 0.25, 0.5, 0.75, 1.0)),
    RepresentationShiftLeRF(fractions=(0.1, 0.25, 0.5, 0.75, 1.0)),
], ids=["deletion", "insertion", "lerf"])
def test_oracle_beats_random_on_every_order(reader, metric):
    net, x, oracle, random, _ = reader
    good, bad = np.asarray(metric(net, x, a_batch=oracle)), np.asarray(metric(net, x, a_batch=random))
    curves = metric.curve()
    assert curves.series["shift"].shape == (len(x), 5) and np.allclose(curves.x, [10, 25, 50, 75, 100])
    higher = lfeval.metrics.score_direction(metric) == "higher"
    better = good > bad if higher else good < bad
    assert (good.mean() > 1.1 * bad.mean() if higher else good.mean() < 0.5 * bad.mean()), (good.mean(), bad.mean())
    assert better.mean() > 0.7, (type(metric).__name__, better.mean())
    metric(net, x, a_batch=oracle)
    with torch.no_grad():
        full = net(torch.as_tensor(x)).pow(2).sum(1).numpy()
    if metric.order == "deletion":  # from 50% on, the four read features are gone: the whole ||f(x)||²
        np.testing.assert_allclose(metric.curves[:, 2:], full[:, None].repeat(3, 1), rtol=1e-5)
    if metric.order == "insertion":  # ... and revealed: f(x) is back exactly
        np.testing.assert_allclose(metric.curves[:, 2:], 0.0, atol=1e-10)
    if metric.order == "lerf":  # up to 50% (6 of the 8 ignored features) nothing moves
        np.testing.assert_allclose(metric.curves[:, :3], 0.0, atol=1e-10)


@pytest.mark.parametrize("target", ["similarity", "majority_probability"])
def test_cocoa_insertion_and_deletion_orderings(reader, target):
    net, x, oracle, random, pool = reader
    for cls in (CorpusInsertion, CorpusDeletion):
        metric = cls(pool, target=target, n_clusters=4, steps=12)
        good, bad = np.mean(metric(net, x, a_batch=oracle)), np.mean(metric(net, x, a_batch=random))
        assert (good > bad) if cls is CorpusInsertion else (good < bad), (cls.__name__, target, good, bad)
        curve = metric.curve()
        assert curve.series[target].shape == (len(x), 13) and curve.x[0] == 0 and curve.x[-1] == 100
    # the deletion curve starts at the explicand's own value, written out with NumPy / scikit-learn from the corpus
    # and foil the metric drew: mean cosine to the corpus minus mean cosine to the foil, or the probability of the
    # corpus' majority class under a logistic-regression probe on the standardised pool latents (k-means classes)
    from sklearn.linear_model import LogisticRegression

    fitted = metric._fitted
    with torch.no_grad():
        z, h = net(torch.as_tensor(x)).double().numpy(), net(torch.as_tensor(pool)).double().numpy()
    centroids = fitted.centroids.numpy()
    group = ((z[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)  # the nearest k-means centroid
    unit_z, unit_h = z / np.linalg.norm(z, axis=1, keepdims=True), h / np.linalg.norm(h, axis=1, keepdims=True)
    if target == "similarity":
        start = [np.mean(unit_h[fitted.corpora[g].numpy()] @ unit_z[i])
                 - np.mean(unit_h[fitted.foils[g].numpy()] @ unit_z[i]) for i, g in enumerate(group)]
    else:
        classes = ((h[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
        mean, scale = h.mean(0), h.std(0) + 1e-12
        probe = LogisticRegression(max_iter=2000, random_state=0).fit((h - mean) / scale, classes)
        assert list(probe.classes_) == list(range(len(centroids)))
        predicted = probe.predict((h - mean) / scale)
        majority = [np.bincount(predicted[fitted.corpora[g].numpy()], minlength=len(centroids)).argmax()
                    for g in group]
        start = probe.predict_proba((z - mean) / scale)[np.arange(len(z)), majority]
    np.testing.assert_allclose(metric.curves[:, 0], start, atol=1e-5)
    assert np.ptp(start) > 0.01  # a per-explicand value, not a constant


# ---------------------------------------------------------------------------------------------- label-free rate
def test_label_free_similarity_rate_ranks_latent_methods_above_random(ae, digits):
    x_train, x, y = digits.x_train[:300], digits.x_test[:60].numpy(), digits.y_test[:60].numpy()
    explain = functools.partial(lfeval.explain.examples.explain_func, x_train=x_train)
    random = np.random.default_rng(0).random((len(x), len(x_train))).astype(np.float32)
    for rule in ("kmeans", "knn"):
        metric = LabelFreeSimilarityRate(x_train, rule=rule)
        chance = np.mean(metric(ae, x, a_batch=random))
        for method in ("cosine", "dknn"):
            score = np.mean(metric(ae, x, a_batch=explain(ae, x, method=method)))
            assert score > chance + 0.4, (rule, method, score, chance)
    # pseudo-labels from the reference clusters of the true classes reproduce the labelled rate
    a = explain(ae, x, method="cosine")
    labelled = SimilarityRate(digits.y_train[:300])(ae, x, y_batch=y, a_batch=a)
    free = LabelFreeSimilarityRate(x_train, reference="input", n_clusters=10)(ae, x, a_batch=a)
    assert abs(np.mean(free) - np.mean(labelled)) < 0.15


# ---------------------------------------------------------------------------------------------- meta-evaluation
def test_every_peer_metric_beats_a_random_control_in_meta_evaluation(ae, digits):
    """Each peer metric's MC exceeds by 0.05 that of a control metric that ignores the explanation (i.i.d. uniform
    scores, test_meta.RandomScore), on the Model and the Input tests, with the same methods, tests and seed
    (measured: MC 0.59-0.79 against the control's 0.42-0.54)."""
    from test_meta import RandomScore

    x, x_train = digits.x_test[:24].numpy(), digits.x_train[:200].numpy()
    ctx = MetricContext(n_features=64, seed=0, x_train=x_train, y_train=digits.y_train[:200].numpy())
    explain = functools.partial(lfeval.explain.examples.explain_func, x_train=x_train)
    setups = {FEATURES: ({"Saliency": {}, "RELAX": {"n_masks": 64, "batch_size": 4096}, "Random": {}}, None),
              EXAMPLES: ({"cosine": {}, "dknn": {}}, explain)}

    def mc(metric, kind, **kw):
        methods, func = setups[kind]
        meta = LabelFreeMetaEvaluation(default_test_suite(seed=0), methods, iterations=1, nr_perturbations=2,
                                       explain_func=func, display_progressbar=False)
        with np.errstate(all="ignore"):
            summary = meta(metric, ae, x, **kw).summary()
        assert set(summary.index) == {"Input", "Model"} and np.isfinite(summary.values).all(), summary
        return summary["MC"]

    controls = {}
    for kind in (FEATURES, EXAMPLES):
        control = RandomScore(seed=0)
        control.example_attributions = kind == EXAMPLES  # hand it the (N, n_train) matrices as they are
        controls[kind] = mc(control, kind, score_direction="higher")
    for name in PEER_FEATURE_METRICS + PEER_EXAMPLE_METRICS:
        kind = CATALOGUE[name].kinds[0]
        got = mc(build_metric(name, ctx, kind), kind)
        assert (got > controls[kind] + 0.05).all(), (name, got.to_dict(), controls[kind].to_dict())


# ---------------------------------------------------------------------------------------------- lfeval run
CONFIG = """
[run]
pretexts = ["reconstruction", "classification"]
epochs = 100
latent_dim = 8
checkpoints = 3
cache_dir = "{cache}"
explainers = ["Saliency", "RELAX", "COCOA", "Random"]
example_methods = ["cosine", "dknn"]
metrics = {metrics}
meta_metrics = ["RepresentationShiftInsertion", "CorpusInsertion", "LabelFreeSimilarityRate"]
n_explain = 24
n_train_examples = 200
pretext_seeds = [0]
meta_iterations = 1
meta_perturbations = 2
meta_samples = 24

[run.explainer_params.RELAX]
n_masks = 128
batch_size = 4096

[run.explainer_params.COCOA]
inner = "IntegratedGradients"
n_steps = 16
"""


def test_run_scores_and_meta_evaluates_the_peers_next_to_the_paper(tmp_path, encoders, encoder_cache):
    metrics = ["RepresentationShift", "SimilarityRate"] + PEER_FEATURE_METRICS + PEER_EXAMPLE_METRICS
    config = tmp_path / "peers.toml"
    config.write_text(CONFIG.format(cache=encoder_cache.as_posix(), metrics=metrics))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "runs"), "--name", "peers", "--quiet"]) == 0
    d = tmp_path / "runs" / "peers"
    scores = pd.read_csv(d / "scores.csv")
    assert np.isfinite(scores["score"]).all()
    features = scores[scores["kind"] == "features"]
    assert set(features["method"]) == {"Saliency", "RELAX", "COCOA", "Random"}
    assert set(features["metric"]) == {"RepresentationShift"} | set(PEER_FEATURE_METRICS)
    assert set(scores.loc[scores["kind"] == "examples", "metric"]) == {"SimilarityRate"} | set(PEER_EXAMPLE_METRICS)
    s = scores.set_index(["pretext", "method", "metric"])["score"]
    for p in ("reconstruction", "classification"):
        assert s[(p, "COCOA", "CorpusInsertion")] > s[(p, "Random", "CorpusInsertion")]
        assert s[(p, "RELAX", "RepresentationShift")] > s[(p, "Random", "RepresentationShift")]
    meta = pd.read_csv(d / "meta.csv")
    assert set(meta["metric"]) == {"RepresentationShiftInsertion", "CorpusInsertion", "LabelFreeSimilarityRate"}
    assert np.isfinite(meta[["IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"]]).all().all()
    html = (d / "report.html").read_text()
    for name in metrics:
        assert f"<b>{name}</b>:" in html
    plots = {p.name for p in (d / "plots").glob("*.png")}
    assert {f"curves_{m}.png" for m in PEER_FEATURE_METRICS + ["LabelFreeSimilarityRate"]} <= plots


def test_relax_masks_time_steps_of_a_channel_first_series():
    """Series are laid out (C, T): RELAX's smooth masks run over time and are shared by the channels (they once ran
    over the channels, so a univariate series had a single unit and RELAX refused it). An encoder that reads only
    the first half of the series gets its importance there."""
    torch.manual_seed(0)
    weight = torch.randn(4, 2, 20)
    weight[:, :, 10:] = 0  # only t < 10 reaches the latent
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 4, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(weight.reshape(4, 40))
    x = torch.rand(3, 2, 20).numpy() + 0.5
    enc = lfeval.as_encoder(net, x, modality="time_series")
    a = lfeval.explain(enc, x, method="RELAX", n_masks=512, num_cells=5)
    assert a.shape == x.shape and np.allclose(a[:, 0], a[:, 1])  # one mask per time step, shared by the channels
    assert (a[:, 0, :10].mean(1) > a[:, 0, 10:].mean(1)).all()
    uni = lfeval.as_encoder(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 4)).eval(), x[:, :1],
                            modality="time_series")
    assert np.ptp(lfeval.explain(uni, x[:, :1], method="RELAX", n_masks=64, num_cells=5)[0]) > 0
