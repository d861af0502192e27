"""The architecture contract: lfeval.Encoder, modality objects, one baseline for every metric, and
public names importable both as modules and as attributes."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import quantus
import torch

import lfeval
from lfeval.data import GaussianBlur
from lfeval.errors import InvalidArgument, InvalidInput, UnknownName
from lfeval.metrics import LabelFree, RepresentationShift
from lfeval.modalities import default_modality, get_modality


def test_modalities_own_layout_units_and_quantus_type():
    image, tab, series = (get_modality(n) for n in ("image", "tabular", "time_series"))
    assert image.n_features((3, 32, 32)) == 1024 and image.unit_shape((3, 32, 32)) == (1, 32, 32)
    a = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) - 10
    np.testing.assert_array_equal(image.unit_importance(a, (3, 2, 2)), a.abs().sum(1).reshape(2, -1))
    assert image.unit_importance(a[:, :1], (3, 2, 2)).shape == (2, 4)  # already reduced to one channel
    assert tab.canonical_shape((30,)) == (1, 30) and tab.n_features((1, 30)) == 30
    assert series.n_features((1, 140)) == 140 and series.n_features((3, 140)) == 140  # a step in every channel
    assert [m.data_type for m in (image, tab, series)] == [quantus.helpers.enums.DataType.IMAGE,
                                                           quantus.helpers.enums.DataType.TABULAR,
                                                           quantus.helpers.enums.DataType.TIMESERIES]
    assert image == "image" and {image: 1}["image"] == 1  # a modality equals its name
    assert default_modality((30,)) == "tabular" and default_modality((1, 30)) == "tabular"
    assert default_modality((3, 140)) == "time_series" and default_modality((3, 8, 8)) == "image"
    with pytest.raises(InvalidInput, match=r"\(C, H, W\)"):
        image.check_sample_shape((8, 8))
    with pytest.raises(UnknownName, match="Did you mean 'image'"):
        get_modality("imag")


def test_plain_module_is_wrapped_with_documented_defaults():
    net = torch.nn.Sequential(torch.nn.Linear(5, 2)).eval()  # a tabular module of (N, D) rows
    x = torch.rand(6, 5)
    enc = lfeval.as_encoder(net, x)
    assert enc.modality == "tabular" and enc.input_shape == (1, 5) and enc.native_shape == (5,)
    assert enc.pretext_model is None and enc.checkpoints == [] and enc.baseline is None
    torch.testing.assert_close(enc(x.reshape(6, 1, 5)), net(x))  # the canonical layout is fed to the module
    assert float(enc.baseline_for(x).abs().sum()) == 0.0  # zeros
    a = lfeval.explain(net, x, method="InputXGradient")  # same shape as the inputs, native layout
    assert a.shape == (6, 5)
    np.testing.assert_allclose(a, (x * (net(x) @ net[0].weight)).detach(), atol=1e-6)
    df = lfeval.evaluate({"RS": RepresentationShift()}, {"Saliency": {}, "Random": {}}, net, x.numpy())
    assert np.isfinite(df.to_numpy()).all()
    assert lfeval.as_encoder(enc) is enc  # an Encoder is returned as it is
    with pytest.raises(InvalidInput, match="encoder takes"):
        lfeval.explain(enc, torch.rand(2, 1, 4), method="Saliency")
    with pytest.raises(InvalidArgument, match="torch.nn.Module"):
        lfeval.as_encoder(lambda x: x, x)


def test_trained_encoder_copy_shares_checkpoints_and_keeps_the_full_model(ae):
    twin = ae.copy()
    assert twin.checkpoints is ae.checkpoints and twin.module is not ae.module
    assert twin.pretext_model.encoder is twin.module  # the copied full model holds the copied network
    with torch.no_grad():
        next(twin.module.parameters()).add_(1.0)
    assert not torch.equal(next(twin.module.parameters()), next(ae.module.parameters()))
    other = ae.replace(baseline=0.5)
    assert other.module is ae.module and other.pretext_model is ae.pretext_model and other.baseline == 0.5


def test_every_metric_masks_with_the_encoders_baseline():
    """RepresentationShift and LabelFree(PixelFlipping) both replace removed pixels with the encoder's
    baseline (here a blur of each RGB image, the paper's CIFAR-10 choice): PixelFlipping's curve equals a
    reference computation that blurs, and differs from Quantus' black."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5)).eval()
    enc = lfeval.Encoder(net, baseline=GaussianBlur(sigma=1.0, kernel_size=5), input_shape=(3, 8, 8)).eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    step, n_steps = 32, 6  # over 3 x 64 entries

    def reference():  # PixelFlipping on g_x with every removed entry set to the blurred image's value
        blur, z = enc.baseline_for(x), enc(x)
        order = torch.argsort(-a.reshape(6, -1), dim=1, stable=True)
        xp, curve = x.reshape(6, -1).clone(), []
        for k in range(n_steps):
            idx = order[:, k * step:(k + 1) * step]
            xp.scatter_(1, idx, blur.reshape(6, -1).gather(1, idx))
            curve.append((enc(xp.reshape(x.shape)) * z).sum(1))
        curve = torch.stack(curve, 1).detach().numpy()
        return ((curve[:, 1:] + curve[:, :-1]) / 2).sum(1) / (n_steps - 1)  # trapezoid on a uniform [0, 1] grid

    flip = LabelFree(quantus.PixelFlipping(features_in_step=step, disable_warnings=True))
    got = np.asarray(flip(enc, x.numpy(), a_batch=a.numpy()))
    np.testing.assert_allclose(got, reference(), rtol=1e-4, atol=1e-5)
    black = LabelFree(quantus.PixelFlipping(features_in_step=step, disable_warnings=True), baseline="metric")
    assert not np.allclose(np.asarray(black(enc, x.numpy(), a_batch=a.numpy())), got)
    # a metric built with its own baseline keeps it
    uniform = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.5, disable_warnings=True)
    assert not LabelFree(uniform)._replaces_with_black()


@pytest.mark.parametrize("module, names", [
    ("lfeval.examples", ["importance", "explain_func", "TracIn", "METHODS"]),
    ("lfeval.explain", ["explain", "explain_units", "register_explainer", "FeatureExplainer"]),
    ("lfeval.explain.examples", ["importance"]),
    ("lfeval.metrics", ["RepresentationShift", "SimilarityRate", "PretextCorrelation", "LabelFree", "CATALOGUE",
                        "register_metric", "score_direction"]),
    ("lfeval.meta", ["LabelFreeMetaEvaluation", "LatentModelPerturbationTest", "LatentInputPerturbationTest",
                     "default_test_suite", "benchmark"]),
    ("lfeval.data", ["load", "Dataset", "available"]),
    ("lfeval.models", ["train_encoder", "PRETEXTS", "Encoder"]),
    ("lfeval.modalities", ["get_modality", "register_modality"]),
    ("lfeval.report", ["plots", "rank_explainers"]),
    ("lfeval.evaluation", ["evaluate"]),
    ("lfeval.config", ["RunConfig"]),
    ("lfeval.pipeline", ["run", "report"]),
    ("lfeval.threads", ["limit", "choose", "scope", "work_of", "ENV"]),
    ("lfeval.encoder", ["Encoder", "as_encoder", "check_model"]),
    ("lfeval.execution", ["Cell", "get_executor", "SerialExecutor", "RayExecutor", "cell_device"]),
    ("lfeval.registry", ["Registry", "closest", "unknown"]),
    ("lfeval.validation", ["check_inputs", "check_choice", "check_positive_int"]),
    ("lfeval.diagnostics", ["compare_placements"]),
])
def test_public_names_import_as_modules_and_attributes(module, names):
    """``import lfeval.examples`` and ``lfeval.examples`` both work, for every public module in the README."""
    imported = importlib.import_module(module)
    attribute = lfeval
    for part in module.split(".")[1:]:
        attribute = getattr(attribute, part)
    assert attribute is imported
    for name in names:
        assert getattr(imported, name) is not None
    for name in ("explain", "explain_units", "evaluate", "Encoder", "as_encoder"):
        assert callable(getattr(lfeval, name))


def test_modalities_are_a_registry_with_the_one_suggestion():
    from lfeval.modalities import MODALITIES, Image, register_modality
    from lfeval.registry import Registry

    assert isinstance(MODALITIES, Registry) and MODALITIES.names()[:3] == ("image", "tabular", "time_series")
    with pytest.raises(UnknownName, match="Unknown modality 'imag'. Did you mean 'image'?"):
        get_modality("imag")
    with pytest.raises(InvalidArgument, match="Modality instance"):
        register_modality(Image)  # the class, not an instance
    assert get_modality("image") is MODALITIES["image"]


def test_a_fresh_process_knows_every_registered_name():
    """Importing any one lfeval module (a Ray worker imports only the module of the function it unpickles) registers
    every explainer, example method, metric, modality and data set: it runs the root, which imports every public
    module eagerly."""
    import subprocess
    import sys

    code = ("import sys, lfeval.registry\n"
            "lfeval = sys.modules['lfeval']\n"
            "from lfeval.explain import EXPLAINERS, EXAMPLE_METHODS\n"
            "print(sorted(EXPLAINERS), sorted(EXAMPLE_METHODS), sorted(lfeval.metrics.CATALOGUE),"
            " sorted(lfeval.modalities.MODALITIES), lfeval.data.available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from lfeval.explain import EXAMPLE_METHODS, EXPLAINERS

    expected = (sorted(EXPLAINERS), sorted(EXAMPLE_METHODS), sorted(lfeval.metrics.CATALOGUE),
                sorted(lfeval.modalities.MODALITIES), lfeval.data.available())
    assert out.strip() == " ".join(map(repr, expected))
    assert {"Saliency", "IntegratedGradients", "Occlusion", "Random"} <= set(EXPLAINERS)
