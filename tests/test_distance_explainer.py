"""Distance Explainer (Meijer et al. 2025) as an lfeval pair method: equal to the ``distance-explainer`` package on
the same masks, its mask generator equal to dianna's construction, batched, seeded, on every continuous modality
(and tokens on text), with lfeval errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidArgument, LfevalError
from lfeval.explain.distance import (
    DistanceExplainer,
    distance_masks,
    draw_grids,
    explain_distance,
    grid_masks,
    selection_weights,
)


def _net(d_in=64, d_out=5, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, d_out)).to(dtype).eval()


def _package():
    return pytest.importorskip("distance_explainer", reason="the distance-explainer package is not installed "
                                                           "(pip install distance-explainer, lfeval's dev extra)")


def _run_package(net, a_one: np.ndarray, b_one: np.ndarray, masks: np.ndarray, **options) -> np.ndarray:
    """The package's ``explain_image_distance`` on one channel-first image (C, H, W), with masks (K, H, W)."""
    pkg = _package()

    def model(x):
        with torch.no_grad():
            return net(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    explainer = pkg.DistanceExplainer(n_masks=len(masks), axis_labels={0: "channels"}, batch_size=100, **options)
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        out = explainer.explain_image_distance(model, a_one, model(b_one[None])[0], masks=masks[..., None])
    return np.asarray(out)[0, ..., 0]  # (1, H, W, 1) -> (H, W)


def test_equals_the_package_on_the_same_masks():
    net = _net()
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 1, 8, 8), dtype=np.float32), rng.random((3, 1, 8, 8), dtype=np.float32)
    options = dict(n_masks=300, feature_res=4, seed=5)
    ours = explain_distance(net, a, b, **options)
    masks = distance_masks(300, (8, 8), feature_res=4, seed=5).numpy()
    for i in range(3):
        np.testing.assert_allclose(ours[i, 0], _run_package(net, a[i], b[i], masks), atol=1e-5)
    # other selection ranges, passed to both
    ranges = dict(mask_selection_range_max=0.3, mask_selection_negative_range_min=0.5)
    ours = explain_distance(net, a[:1], b[:1], **options, **ranges)
    np.testing.assert_allclose(ours[0, 0], _run_package(net, a[0], b[0], masks, **ranges), atol=1e-5)


def test_masks_are_dianna_s_interpolated_masks():
    """Each mask is scikit-image's resize (order 1, reflect, no anti-aliasing) of its cell grid to (R + 1) *
    ceil(H / R), cropped at its offset: dianna's ``generate_interpolated_float_masks_for_image``, drawn seeded."""
    resize = pytest.importorskip("skimage.transform").resize
    for size, res in (((8, 8), 4), ((8, 8), 8), ((28, 20), 8), ((10, 7), 3)):
        cells, offsets = draw_grids(20, size, res, 0.5, seed=1)
        ours = grid_masks(cells, offsets, size).numpy()
        cell = np.ceil(np.array(size) / res)
        for k in range(20):
            up = resize(cells[k].numpy(), (res + 1) * cell, order=1, mode="reflect", anti_aliasing=False)
            y, x = int(offsets[0, k]), int(offsets[1, k])
            np.testing.assert_allclose(ours[k], up[y:y + size[0], x:x + size[1]], atol=1e-6)
            assert 0 <= y < cell[0] and 0 <= x < cell[1]


def test_agrees_with_the_package_s_own_random_masks():
    """With its own (global NumPy) random masks the package agrees with lfeval's seeded masks statistically."""
    net = _net(seed=3)
    rng = np.random.default_rng(2)
    a, b = rng.random((1, 1, 8, 8), dtype=np.float32), rng.random((1, 1, 8, 8), dtype=np.float32)
    pkg = _package()
    from dianna.utils.maskers import generate_interpolated_float_masks_for_image

    np.random.seed(0)
    masks = generate_interpolated_float_masks_for_image((8, 8), 0.5, 4000, 4)[..., 0]
    assert pkg is not None
    theirs = _run_package(net, a[0], b[0], masks)
    ours = explain_distance(net, a, b, n_masks=4000, feature_res=4, seed=0)[0, 0]
    assert np.corrcoef(theirs.ravel(), ours.ravel())[0, 1] > 0.9


def test_selection_weights_follow_the_percentile_ranges():
    d = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]])
    w = selection_weights(d, (0.0, 0.2, 0.8, 1.0))  # 2 closest (+1/2), 2 farthest (-1/2)
    assert w.tolist() == [[0, 0.5, -0.5, 0, 0, 0, -0.5, 0, 0, 0.5]]


def test_batch_invariance_seed_determinism_and_channels():
    net = _net(d_in=3 * 64)
    x, ref = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 8, 8)
    whole = explain_distance(net, x, ref, n_masks=100, feature_res=4, seed=2, batch_size=256)
    parts = np.concatenate([explain_distance(net, x[i:i + 1], ref[i:i + 1], n_masks=100, feature_res=4, seed=2)
                            for i in range(6)])
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    np.testing.assert_allclose(explain_distance(net, x, ref, n_masks=100, feature_res=4, seed=2, batch_size=7),
                               whole, atol=1e-6)  # fewer rows per pass, same answer
    np.testing.assert_array_equal(explain_distance(net, x, ref, n_masks=100, feature_res=4, seed=2), whole)
    assert not np.array_equal(explain_distance(net, x, ref, n_masks=100, feature_res=4, seed=3), whole)
    assert np.array_equal(whole[:, :1].repeat(3, 1), whole)  # one value per pixel, shared by the channels
    # without a partner the reference is f(a) itself (lfeval.explain)
    alone = lfeval.explain(net, x.numpy(), method="DistanceExplainer", n_masks=100, feature_res=4, seed=2)
    np.testing.assert_allclose(alone, explain_distance(net, x, x, n_masks=100, feature_res=4, seed=2), atol=1e-6)


def test_float64_encoder_and_other_modalities():
    net64 = _net(dtype=torch.float64)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    a64 = explain_distance(net64, x, x.flip(0), n_masks=64, feature_res=4)
    a32 = explain_distance(net64.float(), x.float(), x.flip(0).float(), n_masks=64, feature_res=4)
    assert np.isfinite(a64).all()
    np.testing.assert_allclose(a64, a32, atol=1e-5)
    # time series (C, T): 1-D interpolated masks over time, shared by the channels
    ts = lfeval.as_encoder(nn.Sequential(nn.Flatten(), nn.Linear(2 * 30, 4)).eval(), modality="time_series",
                           input_shape=(2, 30))
    s = torch.rand(3, 2, 30)
    out = explain_distance(ts, s, s.roll(1, 0), n_masks=64, feature_res=6)
    assert out.shape == (3, 2, 30) and np.array_equal(out[:, :1].repeat(2, 1), out) and np.isfinite(out).all()
    # tabular rows: each feature kept with probability p_keep on its own
    tab = lfeval.as_encoder(nn.Sequential(nn.Flatten(), nn.Linear(10, 3)).eval(), modality="tabular",
                            input_shape=(1, 10))
    r = torch.rand(5, 1, 10)
    out = explain_distance(tab, r, r.roll(1, 0), n_masks=200)
    assert out.shape == (5, 1, 10) and np.isfinite(out).all() and np.abs(out).max() > 0


def test_errors_are_lfeval_errors():
    net = _net()
    x = torch.rand(2, 1, 8, 8)
    cases = [
        (dict(feature_res=9), "feature_res"),
        (dict(p_keep=1.0), "p_keep"),
        (dict(n_masks=5, mask_selection_negative_range_max=0.95), "empty"),  # int(5 * 0.1) = 0, int(4.5) = int(4.75)
        (dict(mask_selection_range_max=1.5), "mask_selection_range_max"),
        (dict(n_mask=10), "n_masks"),  # a misspelt option names the right one
    ]
    for options, match in cases:
        with pytest.raises(InvalidArgument, match=match) as info:
            explain_distance(net, x, x, **options)
        assert isinstance(info.value, LfevalError)
    assert DistanceExplainer.options() == ("n_masks", "feature_res", "p_keep", "mask_selection_range_min",
                                           "mask_selection_range_max", "mask_selection_negative_range_min",
                                           "mask_selection_negative_range_max")
