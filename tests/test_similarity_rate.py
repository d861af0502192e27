"""SimilarityRate: a hand-made matrix, counts vs fractions, Quantus integration, errors."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import quantus
import torch

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, LabelsRequired
from lfeval.metrics import SimilarityRate


class Flat(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


A = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
Y_TRAIN, Y_TEST = np.array([0, 0, 1, 1]), np.array([0, 0])
X = np.zeros((2, 1, 3), dtype=np.float32)


def test_hand_made_matrix():
    m = SimilarityRate(Y_TRAIN, M=[1, 2, 4])
    scores = m(model=Flat().eval(), x_batch=X, y_batch=Y_TEST, a_batch=A)
    np.testing.assert_allclose(m.rates["top"], [[1, 1, 0.5], [0, 0, 0.5]])
    np.testing.assert_allclose(m.rates["bottom"], [[0, 0, 0.5], [1, 1, 0.5]])
    np.testing.assert_allclose(scores, [2.5 / 3, 0.5 / 3], rtol=1e-6)
    contrast = SimilarityRate(Y_TRAIN, M=[1, 2, 4], contrast=True)
    np.testing.assert_allclose(contrast(model=Flat().eval(), x_batch=X, y_batch=Y_TEST, a_batch=A),
                               [2 / 3, -2 / 3], rtol=1e-6)
    fractions = SimilarityRate(Y_TRAIN, M=[0.5])
    assert list(fractions.counts) == [2]
    np.testing.assert_allclose(fractions(model=Flat().eval(), x_batch=X, y_batch=Y_TEST, a_batch=A), [1.0, 0.0])


def test_in_quantus_and_lfeval_evaluate(ae, digits):
    x_tr, y_tr = digits.x_train[:300], digits.y_train[:300]
    x, y = digits.x_test[:100].numpy(), digits.y_test[:100].numpy()
    cos = lfeval.examples.importance(ae, x_tr, x, "cosine").numpy()
    direct = np.mean(SimilarityRate(y_tr, M=[5])(model=ae, x_batch=x, y_batch=y, a_batch=cos))
    via_quantus = quantus.evaluate({"SR": SimilarityRate(y_tr, M=[5])}, {"cosine": cos}, ae, x, y, agg_func=np.mean)
    assert via_quantus["cosine"]["SR"] == pytest.approx(direct)
    df = lfeval.evaluate({"SR": SimilarityRate(y_tr, M=[5])},
                         {"cosine": functools.partial(lfeval.examples.explain_func, x_train=x_tr),
                          "precomputed": cos}, ae, x, y)
    assert df.loc["cosine", "SR"] == pytest.approx(direct) == df.loc["precomputed", "SR"]


def test_bad_input():
    with pytest.raises(LabelsRequired, match="y_batch"):
        SimilarityRate(Y_TRAIN, M=[1])(model=Flat().eval(), x_batch=X, y_batch=None, a_batch=A)
    with pytest.raises(InvalidArgument, match="n_train=4"):
        SimilarityRate(Y_TRAIN, M=[5])
    with pytest.raises(InvalidInput, match=r"\(n_test, n_train\)"):
        SimilarityRate(Y_TRAIN, M=[1])(model=Flat().eval(), x_batch=X, y_batch=Y_TEST, a_batch=A[:, :3])
    with pytest.raises(InvalidArgument, match="y_train"):
        SimilarityRate(None)
