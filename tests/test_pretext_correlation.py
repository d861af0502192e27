"""PretextCorrelation, pretext_correlation_table, UnitSaliencyCorrelation and the disentangled VAEs (§4.2-4.3)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.stats
import torch

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput
from lfeval.metrics import (
    PretextCorrelation,
    UnitSaliencyCorrelation,
    correlation_matrix,
    pooled_unit_correlation,
    pretext_correlation_table,
    unit_saliency_stats,
)
from lfeval.metrics.pretext_correlation import rowwise_correlation


def test_rowwise_correlation_known_answers():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 2.0, 5.0]])
    b = torch.tensor([[2.0, 4.0, 6.0, 8.0], [3.0, 1.0, 0.0, 2.0]])
    r = rowwise_correlation(a, b)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(scipy.stats.pearsonr(a[1], b[1])[0], abs=1e-6)
    s = rowwise_correlation(a, b, "spearman")
    assert s[1] == pytest.approx(scipy.stats.spearmanr(a[1], b[1])[0], abs=1e-6)
    assert torch.isnan(rowwise_correlation(torch.ones(1, 3), a[:1, :3]))[0]


def test_pretext_correlation_per_sample(encoders, digits):
    x = digits.x_test[:20].numpy()
    ae, den = encoders["reconstruction"], encoders["denoising"]
    a = lfeval.explain(ae, x, method="Saliency")
    same = PretextCorrelation([ae])(model=ae, x_batch=x, a_batch=a, explain_func=lfeval.explain,
                                    explain_func_kwargs={"method": "Saliency"})
    np.testing.assert_allclose(same, 1.0, atol=1e-6)  # a reference identical to the model agrees fully
    refs = {"denoising": den, "classification": encoders["classification"]}
    scores = PretextCorrelation(refs)(model=ae, x_batch=x, a_batch=a, explain_func=lfeval.explain,
                                      explain_func_kwargs={"method": "Saliency"})
    expected = np.mean([[scipy.stats.pearsonr(np.abs(a[i]).ravel(),
                                              np.abs(lfeval.explain(r, x[i:i + 1], method="Saliency")).ravel())[0]
                         for i in range(len(x))] for r in refs.values()], axis=0)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_pretext_correlation_of_example_importance(encoders, digits):
    """With explanations="examples" the rows of (N, n_train) matrices are correlated, as scipy does."""
    enc, ref = encoders["reconstruction"], encoders["contrastive"]
    x, x_train = digits.x_test[:10].numpy(), digits.x_train[:80]
    func = functools.partial(lfeval.explain.examples.explain_func, x_train=x_train)
    a = func(enc, x, method="dknn")
    metric = PretextCorrelation([ref], explain_func=func, explanations="examples")
    scores = np.asarray(metric(model=enc, x_batch=x, a_batch=a, explain_func_kwargs={"method": "dknn"}))
    a_ref = func(ref, x, method="dknn")
    expected = [scipy.stats.pearsonr(np.abs(a[i]), np.abs(a_ref[i]))[0] for i in range(len(x))]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    same = PretextCorrelation([enc], explain_func=func, explanations="examples")
    np.testing.assert_allclose(same(model=enc, x_batch=x, a_batch=a, explain_func_kwargs={"method": "dknn"}), 1.0,
                               atol=1e-6)
    with pytest.raises(InvalidInput, match="example-importance matrix"):
        metric(model=enc, x_batch=x, a_batch=a[:, :, None], explain_func_kwargs={"method": "dknn"})


def test_pretext_table_is_the_pooled_pearson(encoders, digits):
    x = digits.x_test[:40].numpy()
    encs = {t: encoders[t] for t in ("reconstruction", "denoising", "classification")}
    table = pretext_correlation_table(encs, x, kind="features", method="IntegratedGradients")
    assert list(table.columns) == ["task_a", "task_b", "mean", "std", "runs"] and len(table) == 3
    a = np.abs(lfeval.explain(encs["reconstruction"], x, method="IntegratedGradients")).ravel()
    b = np.abs(lfeval.explain(encs["classification"], x, method="IntegratedGradients")).ravel()
    row = table[(table.task_a == "reconstruction") & (table.task_b == "classification")].iloc[0]
    assert row["mean"] == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-6)
    mat = correlation_matrix(table)
    assert mat.loc["classification", "reconstruction"] == row["mean"] and mat.loc["denoising", "denoising"] == 1.0
    # two runs: mean and std over runs
    two = pretext_correlation_table({t: [e, e] for t, e in encs.items()}, x, kind="features", seeds=[0, 1])
    assert (two["runs"] == 2).all() and np.isfinite(two["std"]).all()
    ex = pretext_correlation_table(encs, x, kind="examples", x_train=digits.x_train[:200])
    ia = lfeval.examples.importance(encs["reconstruction"], digits.x_train[:200], x, method="dknn").ravel()
    ib = lfeval.examples.importance(encs["denoising"], digits.x_train[:200], x, method="dknn").ravel()
    assert ex.iloc[0]["mean"] == pytest.approx(scipy.stats.pearsonr(ia, ib)[0], abs=1e-5)


def test_unit_saliency_stats_known_answers():
    base = torch.tensor([1.0, 2.0, 0.0, 3.0])
    units = torch.stack([base, 2 * base, torch.tensor([3.0, 0.0, 2.0, 0.0])]).unsqueeze(0)  # (1, 3, 4)
    s = unit_saliency_stats(units)
    r02 = scipy.stats.pearsonr(base, [3.0, 0.0, 2.0, 0.0])[0]
    assert s["correlation"][0] == pytest.approx((1.0 + 2 * r02) / 3, abs=1e-6)
    p = np.array([6.0, 12.0, 5.0]) / 23
    assert s["entropy"][0] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-6)
    assert s["active_units"][0] == 3
    dead = torch.stack([base, torch.zeros(4), torch.tensor([0.0, 1.0, 1.0, 0.0])]).unsqueeze(0)
    assert unit_saliency_stats(dead)["active_units"][0] == 2  # a dead unit carries no saliency


def test_pooled_unit_correlation_is_lfxai_pearson_saliency():
    """Against the paper code's formula written out with NumPy: |z_j a_j| per unit, flattened over examples and
    features, np.corrcoef, mean of the off-diagonal entries. A per-example scale z_j changes the pooled value
    (it does not change the per-example one)."""
    gen = torch.Generator().manual_seed(0)
    units, z = torch.randn(20, 3, 1, 5, 5, generator=gen), torch.randn(20, 3, generator=gen)
    sal = np.abs(z.numpy()[:, :, None, None, None] * units.numpy())
    corr = np.corrcoef(sal.swapaxes(0, 1).reshape(3, -1))
    assert pooled_unit_correlation(units, z) == pytest.approx((corr.sum() - np.trace(corr)) / 6, abs=1e-7)
    assert pooled_unit_correlation(units, z) != pytest.approx(pooled_unit_correlation(units), abs=1e-3)
    per_example = unit_saliency_stats(units)["correlation"]
    np.testing.assert_allclose(unit_saliency_stats(units * z[:, :, None, None, None])["correlation"], per_example,
                               atol=1e-6)
    with pytest.raises(InvalidArgument, match="latents"):
        pooled_unit_correlation(units, z[:, :2])
    with pytest.raises(InvalidArgument, match="units"):
        pooled_unit_correlation(units[:, :1])


@pytest.fixture(scope="module")
def vaes(digits):
    return {p: lfeval.models.train_encoder(digits, pretext=p, beta=1.0, latent_dim=4, epochs=4, seed=0,
                                           display_progressbar=False) for p in ("beta-vae", "tc-vae")}


def test_vaes_train_and_explain(vaes, digits):
    x = digits.x_test[:16].numpy()
    for name, enc in vaes.items():
        mu, logvar = enc.module.distribution(torch.as_tensor(x))
        assert enc(torch.as_tensor(x)).shape == (16, 4) and torch.equal(enc(torch.as_tensor(x)), mu)
        assert np.isfinite(enc.history["val_loss"]).all()
        metric = UnitSaliencyCorrelation(method="Saliency")
        scores = metric(model=enc, x_batch=x)
        # reference: each unit's saliency |d z_j / d x| from the Jacobian of the mean latent, then per example the
        # mean of scipy's Pearson r over the 6 pairs of the 4 units
        jac = torch.autograd.functional.jacobian(lambda v: enc(v).sum(0), torch.as_tensor(x))  # (4, 16, 1, 8, 8)
        sal = jac.abs().transpose(0, 1).flatten(2).double().numpy()  # (16, 4, 64)
        expected = [np.mean([scipy.stats.pearsonr(s[i], s[j])[0] for i in range(4) for j in range(i + 1, 4)])
                    for s in sal]
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        assert np.ptp(expected) > 0.01
        assert metric.entropy.shape == metric.active_units.shape == (16,)
    again = lfeval.models.train_encoder(digits, pretext="tc-vae", beta=1.0, latent_dim=4, epochs=4, seed=0,
                                        display_progressbar=False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), vaes["tc-vae"].state_dict().values()))


def test_bad_input_gets_clear_errors(encoders, digits):
    x = digits.x_test[:8].numpy()
    ae = encoders["reconstruction"]
    with pytest.raises(InvalidArgument, match="reference encoders"):
        PretextCorrelation({})
    other = lfeval.Encoder(lfeval.models.build_encoder("image", (1, 28, 28), 8), input_shape=(1, 28, 28)).eval()
    with pytest.raises(InvalidInput, match="input shapes"):
        PretextCorrelation([encoders["denoising"], other])(model=ae, x_batch=x, a_batch=x,
                                                          explain_func=lfeval.explain)
    with pytest.raises(InvalidInput, match="input shapes"):
        pretext_correlation_table({"a": ae, "b": other}, x)
    with pytest.raises(InvalidArgument, match="two pretext"):
        pretext_correlation_table({"a": ae}, x)
    with pytest.raises(InvalidArgument, match="x_train"):
        pretext_correlation_table({"a": ae, "b": encoders["denoising"]}, x, kind="examples")
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        pretext_correlation_table({"a": ae, "b": encoders["denoising"]}, x * 3)
