"""Label-free feature attributions: known answers, completeness, batch invariance, Quantus fit, errors."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, ModelStateError, UnknownName
from lfeval.explain.features import METHODS


class Linear(nn.Module):
    """f(x) = W x on flattened inputs (N, 1, D)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@pytest.fixture
def linear():
    torch.manual_seed(0)
    w = torch.randn(3, 6)
    x = torch.rand(5, 1, 6)
    return Linear(w).eval(), w, x


def test_saliency_and_ig_of_a_linear_encoder(linear):
    enc, w, x = linear
    grad = (x.flatten(1) @ w.T @ w).view_as(x)  # d/dx' <Wx, Wx'> = W^T W x
    np.testing.assert_allclose(lfeval.explain(enc, x, method="Saliency"), grad.abs().numpy(), atol=1e-5)
    ig = lfeval.explain(enc, x.numpy(), method="IntegratedGradients", baseline=0.0)
    np.testing.assert_allclose(ig, (x * grad).numpy(), atol=1e-5)
    # with one zero baseline and no noise, GradientShap's gradient is constant: the same answer
    gs = lfeval.explain(enc, x, method="GradientShap", n_samples=7, stdevs=0.0, baseline=0.0)
    ixg = lfeval.explain(enc, x, method="InputXGradient")
    np.testing.assert_allclose(gs, (x * grad).numpy(), atol=1e-5)
    np.testing.assert_allclose(ixg, (x * grad).numpy(), atol=1e-5)


def test_ig_completeness_on_a_trained_encoder(ae, digits):
    x = digits.x_test[:16]
    a = lfeval.explain(ae, x, method="IntegratedGradients", n_steps=300)
    with torch.no_grad():
        z = ae(x)
        g_x = (z * z).sum(1)
        g_b = (ae(torch.zeros_like(x)) * z).sum(1)  # the digits baseline is black
    np.testing.assert_allclose(a.reshape(16, -1).sum(1), (g_x - g_b).numpy(), rtol=0.01)


def test_default_baseline_comes_from_the_data_set(ae, digits):
    assert torch.equal(ae.baseline, digits.baseline)
    x = digits.x_test[:4]
    np.testing.assert_array_equal(lfeval.explain(ae, x, method="IntegratedGradients"),
                                  lfeval.explain(ae, x, method="IntegratedGradients", baseline=0.0))
    grey = lfeval.explain(ae, x, method="IntegratedGradients", baseline=0.5, n_steps=200)
    with torch.no_grad():
        z = ae(x)
        expected = (z * z).sum(1) - (ae(torch.full_like(x, 0.5)) * z).sum(1)
    np.testing.assert_allclose(grey.reshape(4, -1).sum(1), expected.numpy(), rtol=0.01)


@pytest.mark.parametrize("method", [m for m in METHODS if not m.startswith("CEM")])
def test_batch_invariance(encoders, digits, method):
    enc = encoders["denoising"]
    x = digits.x_test[:5]
    kw = {"n_samples": 8} if method in ("GradientShap", "SmoothGrad", "ShapleyValueSampling") else {}
    kw.update({"RELAX": {"n_masks": 64}, "COCOA": {"x_train": digits.x_train[:100], "n_clusters": 4}}.get(method, {}))
    batch = lfeval.explain(enc, x, method=method, seed=3, **kw)
    alone = np.concatenate([lfeval.explain(enc, x[i:i + 1], method=method, seed=3, **kw) for i in range(5)])
    assert batch.shape == x.shape and batch.dtype == np.float32
    # perturbation methods subtract g values of order 1e2 computed in float32 by differently sized GEMMs
    atol = 1e-4 if method in ("Occlusion", "FeatureAblation", "ShapleyValueSampling") else 1e-5
    np.testing.assert_allclose(batch, alone, rtol=1e-4, atol=atol)
    shuffled = lfeval.explain(enc, x.flip(0), method=method, seed=3, **kw)
    np.testing.assert_allclose(shuffled[::-1], batch, rtol=1e-4, atol=atol)


def test_random_control_is_seeded_uniform_and_content_keyed(digits, ae):
    x = digits.x_test[:50]
    a, b = lfeval.explain(ae, x, method="Random", seed=1), lfeval.explain(ae, x, method="Random", seed=1)
    c = lfeval.explain(ae, x, method="Random", seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert -1 <= a.min() < -0.9 and 0.9 < a.max() <= 1 and abs(a.mean()) < 0.05
    assert abs(np.corrcoef(a[0].ravel(), a[1].ravel())[0, 1]) < 0.4  # different inputs, different maps


def test_explain_units_adds_up_to_the_auxiliary_function(ae, digits):
    x = digits.x_test[:6]
    units = lfeval.explain_units(ae, x, method="InputXGradient")
    assert units.shape == (6, 8, 1, 8, 8)
    with torch.no_grad():
        z = ae(x).numpy()
    combined = (units * z[:, :, None, None, None]).sum(1)  # g_x = sum_j f_j(x) f_j(x')
    np.testing.assert_allclose(combined, lfeval.explain(ae, x, method="InputXGradient"), rtol=1e-4, atol=1e-5)


def test_quantus_calls_it_as_explain_func(ae, digits):
    x = digits.x_test[:8].numpy()
    scores = quantus.Sparseness(disable_warnings=True)(
        model=ae, x_batch=x, y_batch=None, a_batch=None, explain_func=lfeval.explain,
        explain_func_kwargs={"method": "Saliency"}, device="cpu",
    )
    expected = quantus.Sparseness(disable_warnings=True)(
        model=ae, x_batch=x, y_batch=None, a_batch=lfeval.explain(ae, x, method="Saliency"))
    np.testing.assert_allclose(scores, expected)


def test_bad_input_raises_clear_errors(ae, digits):
    x = digits.x_test[:4]
    with pytest.raises(UnknownName, match="'Saliency'"):
        lfeval.explain(ae, x, method="Salincy")
    with pytest.raises(InvalidInput, match="empty"):
        lfeval.explain(ae, x[:0], method="Saliency")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInput, match="NaN"):
        lfeval.explain(ae, bad, method="Saliency")
    with pytest.raises(InvalidArgument, match="baseline"):
        lfeval.explain(ae, x, method="IntegratedGradients", baseline=torch.zeros(3, 3))
    ae.train()
    try:
        with pytest.raises(ModelStateError, match="eval"):
            lfeval.explain(ae, x, method="Saliency")
    finally:
        ae.eval()


# ---------------------------------------------------------------- one place per fact (issue 29)
BUILT_IN_EXPLAINERS = ("Saliency", "IntegratedGradients", "InputXGradient", "DeepLift", "GuidedBackprop",
                       "Deconvolution", "Occlusion", "FeatureAblation", "ShapleyValueSampling", "COCOA", "CEM-PP",
                       "CEM-PN", "DistanceExplainer", "RELAX", "GradientShap", "SmoothGrad", "Random")
BUILT_IN_EXAMPLE_METHODS = ("cosine", "dknn", "simplex", "tracin", "influence")


@pytest.mark.parametrize("name", BUILT_IN_EXPLAINERS)
def test_each_built_in_explainer_is_a_named_class_statement(name):
    """``class Saliency(CaptumExplainer)`` as captum names it: the registered class is called as its method (the
    hyphen of CEM-PP dropped) and its module defines it with a ``class`` statement, not ``type()``."""
    import ast
    import inspect
    import sys

    from lfeval.explain.base import get_explainer

    cls = get_explainer(name)
    assert cls.__name__ == name.replace("-", "") and cls.name == name
    assert cls.__module__.startswith("lfeval.explain.") and cls.__doc__
    tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    assert cls.__name__ in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_captum_classes_declare_their_facts():
    from captum import attr

    from lfeval.explain import captum_methods as cm

    assert cm.Saliency.captum_class is attr.Saliency and not cm.Saliency.uses_baseline
    assert cm.IntegratedGradients.passes_per_input == 50 and cm.IntegratedGradients.uses_baseline
    assert [n for n in cm.CAPTUM_METHODS if getattr(cm, n).seeded] == ["ShapleyValueSampling"]
    assert cm.CAPTUM_METHODS["Occlusion"] == (attr.Occlusion, True)
    with pytest.raises(TypeError):
        cm.CAPTUM_METHODS["Saliency"] = None  # a read-only view of the classes


def test_one_registry_type_for_explainers_and_example_methods():
    from lfeval.explain.base import EXPLAINERS, FeatureExplainer, explainer_names, get_explainer, register_explainer
    from lfeval.explain.examples import EXAMPLE_METHODS, ExampleImportance, register_example_method
    from lfeval.registry import Registry

    assert isinstance(EXPLAINERS, Registry) and isinstance(EXAMPLE_METHODS, Registry)
    assert explainer_names()[:len(BUILT_IN_EXPLAINERS)] == BUILT_IN_EXPLAINERS
    assert tuple(EXAMPLE_METHODS)[:5] == BUILT_IN_EXAMPLE_METHODS == tuple(lfeval.examples.METHODS)[:5]
    with pytest.raises(UnknownName, match="Did you mean 'Occlusion'"):
        get_explainer("Oclusion")
    with pytest.raises(UnknownName, match="Did you mean 'simplex'"):
        lfeval.examples.importance(nn.Flatten(), torch.rand(3, 2), torch.rand(2, 2), method="simplx")
    with pytest.raises(InvalidArgument, match="FeatureExplainer subclass"):
        register_explainer("NotAClass")(object)
    with pytest.raises(InvalidArgument, match="ExampleImportance subclass"):
        register_example_method("not-a-class", object)
    with pytest.raises(InvalidArgument, match="Did you mean 'n_steps'"):
        get_explainer("IntegratedGradients").check_options({"nsteps": 8})

    @register_explainer("Zeros")
    class Zeros(FeatureExplainer):
        def attribute_batch(self, x, z_ref, baseline, seed):
            return torch.zeros_like(x)

    @register_example_method("uniform")
    class Uniform(ExampleImportance):
        def attribute(self, x_train, x_test):
            return torch.ones(len(x_test), len(x_train))

    try:
        assert Zeros.name == "Zeros" and "Zeros" in lfeval.explain.features.METHODS  # live views of the registries
        assert "uniform" in lfeval.examples.METHODS and EXAMPLE_METHODS.get("uniform") is Uniform
    finally:
        EXPLAINERS.pop("Zeros")
        EXAMPLE_METHODS.pop("uniform")
    assert "Zeros" not in explainer_names() and "uniform" not in lfeval.examples.METHODS


def test_importing_one_explainer_module_registers_every_built_in():
    """A Ray worker that unpickles a class of lfeval.explain.stochastic and nothing else still finds every built-in
    explainer and example-importance method."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import lfeval.explain.stochastic, sys\n"
            "from lfeval.explain.base import EXPLAINERS\n"
            "from lfeval.explain.examples import EXAMPLE_METHODS\n"
            "print(','.join(EXPLAINERS)); print(','.join(EXAMPLE_METHODS))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    explainers, examples = (line.split(",") for line in out.stdout.split())
    assert explainers[:len(BUILT_IN_EXPLAINERS)] == list(BUILT_IN_EXPLAINERS)
    assert examples[:5] == list(BUILT_IN_EXAMPLE_METHODS)


def test_integer_options_refuse_booleans():
    """One integer check (lfeval.validation.check_positive_int): ``True`` is not 1."""
    from lfeval.explain.contrastive import ContrastiveExplainer, fit_prototypes
    from lfeval.explain.corpus import Corpus
    from lfeval.explain.relax import check_mask_geometry

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    pool = torch.rand(12, 1, 4, 4)
    with pytest.raises(InvalidArgument, match="`num_cells` must be an integer >= 1"):
        check_mask_geometry((4, 4), True)
    with pytest.raises(InvalidArgument, match="`num_cells` must be an integer >= 1"):
        lfeval.explain(net, pool[:2], method="RELAX", n_masks=8, num_cells=True)
    for key, minimum in (("n_clusters", 2), ("corpus_size", 1), ("foil_size", 1), ("k", 1)):
        with pytest.raises(InvalidArgument, match=f"`{key}` must be an integer >= {minimum}"):
            Corpus(x_train=pool, **{key: True})
    for key in ("c_steps", "iterations"):
        with pytest.raises(InvalidArgument, match=f"`{key}` must be an integer >= 1"):
            ContrastiveExplainer(net, **{key: True})
    with pytest.raises(InvalidArgument, match="`n_prototypes` must be an integer >= 2"):
        fit_prototypes(net, pool, n_prototypes=True)
