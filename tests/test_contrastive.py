"""Contrastive explanations (CEM): PP/PN on the digits classifier and a digits encoder, batch = per-sample, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, ModelStateError, UnknownName
from lfeval.explain.contrastive import ContrastiveExplainer, fit_prototypes

FAST = {"iterations": 50, "c_steps": 5}  # the defaults are 200 x 9; 50 x 5 suffices on 8x8 digits
TINY = {"iterations": 20, "c_steps": 3}


@pytest.fixture(scope="module")
def setup(encoders, digits):
    """The digits classifier, the reconstruction encoder, its autoencoder and k-means prototypes."""
    enc = encoders["reconstruction"]
    return {
        "classifier": encoders["classification"].pretext_model.eval(),
        "encoder": enc,
        "ae": enc.pretext_model.eval(),
        "prototypes": fit_prototypes(enc, digits.x_train, n_prototypes=10, seed=0),
    }


def _model_and_options(setup, task):
    if task == "classifier":
        return setup["classifier"], {}
    return setup["encoder"], {"prototypes": setup["prototypes"]}


def _decide(setup, task, x):
    """The decision computed independently of the explainer: argmax logits or the nearest prototype."""
    with torch.no_grad():
        if task == "classifier":
            return setup["classifier"](x).argmax(1)
        return torch.cdist(setup["encoder"](x), setup["prototypes"]).argmin(1)


@pytest.mark.parametrize("task", ["classifier", "encoder"])
@pytest.mark.parametrize("mode", ["PP", "PN"])
def test_pp_keeps_the_decision_with_little_mass_and_pn_changes_it(setup, digits, task, mode):
    x = digits.x_test[:16]
    model, opts = _model_and_options(setup, task)
    res = ContrastiveExplainer(model, autoencoder=setup["ae"], mode=mode, **opts, **FAST).explain(x)
    assert res.explanation.shape == res.delta.shape == x.shape
    assert res.found.dtype == torch.bool and res.found.shape == res.c.shape == (16,)
    torch.testing.assert_close(res.decision, _decide(setup, task, x), rtol=0, atol=0)
    torch.testing.assert_close(res.new_decision, _decide(setup, task, res.explanation), rtol=0, atol=0)
    assert (res.delta >= 0).all()
    if mode == "PP":  # x_pp = δ ⊆ x
        torch.testing.assert_close(res.explanation, res.delta)
        assert (res.delta <= x + 1e-6).all()
    else:  # x_pn = x + δ inside [0, 1]
        torch.testing.assert_close(res.explanation, x + res.delta)
        assert (res.explanation <= 1 + 1e-6).all()
    mass = x.flatten(1).sum(1)
    for i in range(len(x)):
        if not res.found[i]:
            assert float(res.delta[i].abs().max()) == 0.0
        elif mode == "PP":
            assert res.new_decision[i] == res.decision[i]
            assert float(res.explanation[i].sum()) <= 0.5 * float(mass[i])
        else:
            assert res.new_decision[i] != res.decision[i]
    assert int(res.found.sum()) >= 8, f"only {int(res.found.sum())}/16 {mode}s found"


@pytest.mark.parametrize("task", ["classifier", "encoder"])
@pytest.mark.parametrize("mode", ["PP", "PN"])
def test_a_batch_equals_one_sample_at_a_time(setup, digits, task, mode):
    x = digits.x_test[20:24]
    model, opts = _model_and_options(setup, task)
    explainer = ContrastiveExplainer(model, autoencoder=setup["ae"], mode=mode, seed=1, **opts, **TINY)
    batch = explainer.explain(x)
    alone = [explainer.explain(x[i:i + 1]) for i in range(len(x))]
    assert batch.found.any()
    for field in ("delta", "explanation", "c", "distance"):
        torch.testing.assert_close(getattr(batch, field), torch.cat([getattr(a, field) for a in alone]),
                                   rtol=0, atol=1e-5)
    for field in ("found", "decision", "new_decision"):
        assert torch.equal(getattr(batch, field), torch.cat([getattr(a, field) for a in alone]))


def test_explain_func_returns_abs_delta_as_float32(setup, digits):
    x = digits.x_test[:6]
    opts = {"autoencoder": setup["ae"], **TINY}
    a = lfeval.explain(setup["classifier"], x.numpy(), digits.y_test[:6].numpy(), method="CEM-PN", **opts)
    res = ContrastiveExplainer(setup["classifier"], mode="PN", **opts).explain(x)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, res.delta.abs().numpy())
    assert a.any()
    # label-free: an encoder with k-means prototypes fitted on x_train, through Quantus' keyword arguments
    b = lfeval.explain(setup["encoder"], x, None, method="CEM-PP", x_train=digits.x_train, device="cpu",
                       softmax=False, **TINY)
    expected = ContrastiveExplainer(setup["encoder"], mode="PP", prototypes=setup["prototypes"], **TINY).explain(x)
    np.testing.assert_array_equal(b, expected.delta.numpy())


def test_same_seed_same_numbers(setup, digits):
    x, x_train = digits.x_test[:4], digits.x_train
    p1, p2 = fit_prototypes(setup["encoder"], x_train, seed=3), fit_prototypes(setup["encoder"], x_train, seed=3)
    assert torch.equal(p1, p2)
    runs = [ContrastiveExplainer(setup["encoder"], mode="PN", x_train=x_train, seed=3, **TINY).explain(x)
            for _ in range(2)]
    assert torch.equal(runs[0].delta, runs[1].delta) and torch.equal(runs[0].c, runs[1].c)


def test_a_sample_without_solution_is_reported_not_found(setup, digits):
    x = digits.x_test[:4]
    res = ContrastiveExplainer(setup["classifier"], mode="PN", c_init=1e-6, c_steps=1, iterations=3).explain(x)
    assert not res.found.any()
    assert not res.delta.any() and torch.equal(res.explanation, x)
    assert torch.equal(res.new_decision, res.decision) and torch.isinf(res.distance).all()


def test_bad_input_raises_clear_errors(setup, digits):
    clf, x = setup["classifier"], digits.x_test[:2]
    with pytest.raises(UnknownName, match="'PN'"):
        ContrastiveExplainer(clf, mode="PNN")
    with pytest.raises(UnknownName):
        lfeval.explain(clf, x, method="CEM-XX")
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        ContrastiveExplainer(clf, **TINY).explain(x * 2)
    with pytest.raises(InvalidArgument, match="kappa"):
        ContrastiveExplainer(clf, kappa=-0.1)
    with pytest.raises(InvalidInput, match="NaN"):
        ContrastiveExplainer(clf, **TINY).explain(torch.full_like(x, float("nan")))
    with pytest.raises(InvalidInput, match="empty"):
        ContrastiveExplainer(clf, **TINY).explain(x[:0])
    with pytest.raises(InvalidArgument, match="kapa"):
        lfeval.explain(clf, x, method="CEM-PP", kapa=0.1)
    with pytest.raises(InvalidArgument, match="prototypes"):
        ContrastiveExplainer(clf, task="encoder")
    training = copy.deepcopy(clf).train()
    with pytest.raises(ModelStateError, match="eval"):
        ContrastiveExplainer(training)
    with pytest.raises(ModelStateError, match="autoencoder"):
        ContrastiveExplainer(clf, autoencoder=copy.deepcopy(setup["ae"]).train())
