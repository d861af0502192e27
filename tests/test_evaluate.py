"""lfeval.evaluate: quantus.evaluate for encoders, with label checks and no swallowed errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidInput, LabelsRequired
from lfeval.metrics import RepresentationShift


def test_dataframe_of_methods_by_metrics(ae, digits):
    x = digits.x_test[:48].numpy()
    rs, sp = RepresentationShift(), quantus.Sparseness(disable_warnings=True)
    ig = lfeval.explain(ae, x, method="IntegratedGradients")
    df = lfeval.evaluate({"RepresentationShift": rs, "Sparseness": sp},
                         {"IntegratedGradients": ig, "Saliency": {}, "Random": lfeval.explain}, ae, x)
    assert isinstance(df, pd.DataFrame)
    assert list(df.index) == ["IntegratedGradients", "Saliency", "Random"]
    assert list(df.columns) == ["RepresentationShift", "Sparseness"]
    assert np.isfinite(df.to_numpy(dtype=float)).all()
    assert df.loc["IntegratedGradients", "RepresentationShift"] == pytest.approx(
        np.mean(RepresentationShift()(model=ae, x_batch=x, a_batch=ig)), rel=1e-6)
    # a dict entry means lfeval.explain(method=<its name>), not Quantus' vanilla gradient
    sal = lfeval.explain(ae, x, method="Saliency")
    expected = np.mean(sp(model=ae, x_batch=x, y_batch=None, a_batch=sal))
    assert df.loc["Saliency", "Sparseness"] == pytest.approx(expected)
    assert df.loc["IntegratedGradients", "RepresentationShift"] > df.loc["Random", "RepresentationShift"]


def test_robustness_metrics_reexplain_label_free(ae, digits):
    x = digits.x_test[:16].numpy()
    df = lfeval.evaluate({"MaxSensitivity": quantus.MaxSensitivity(nr_samples=4, disable_warnings=True)},
                         {"Saliency": {}, "Random": {}}, ae, x)
    assert np.isfinite(df.to_numpy(dtype=float)).all()
    assert df.loc["Saliency", "MaxSensitivity"] < df.loc["Random", "MaxSensitivity"]


def test_refuses_stock_metrics_that_need_labels(ae, digits):
    x = digits.x_test[:8].numpy()
    with pytest.raises(LabelsRequired, match=r"'PF' \(PixelFlipping\).*RepresentationShift"):
        lfeval.evaluate({"PF": quantus.PixelFlipping(disable_warnings=True)}, {"Saliency": {}}, ae, x)


def test_metric_errors_propagate(ae, digits):
    x = digits.x_test[:8].numpy()
    with pytest.raises(InvalidInput, match="a_batch"):
        lfeval.evaluate({"RS": RepresentationShift()}, {"broken": np.zeros((8, 1, 4, 4), np.float32)}, ae, x)


def test_tabular_input_without_channel_axis():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(6, 3), nn.Tanh()).eval()  # a model of (N, D) inputs
    x = torch.rand(20, 6).numpy()
    df = lfeval.evaluate({"RS": RepresentationShift(baseline=0.0)},
                         {"IntegratedGradients": {}, "Precomputed": np.abs(x)}, enc, x)
    assert df.shape == (2, 1) and np.isfinite(df.to_numpy(dtype=float)).all()
