"""Batched ensemble training (lfeval.models.train_ensemble) against lone train_encoder runs with the same seeds.

The members must be what a lone run computes: the same draws, split, batches and per-member early stopping,
with the weights equal up to float rounding of the batched kernels (lfeval/models/ensemble.py says why not
bit-identical)."""

import numpy as np
import pytest
import torch

import lfeval
from lfeval.errors import InvalidArgument
from lfeval.models import PRETEXTS, VAE_PRETEXTS, train_encoder, train_ensemble


def _rel_diff(a, b) -> float:
    sa, sb = a.pretext_model.state_dict(), b.pretext_model.state_dict()
    assert sa.keys() == sb.keys()
    return max(((sa[k] - sb[k]).norm() / sb[k].norm().clamp_min(1e-12)).item() for k in sb)


@pytest.mark.parametrize("pretext", PRETEXTS + VAE_PRETEXTS)
def test_members_equal_lone_runs_after_three_steps(digits, pretext):
    """Full-batch steps: 3 optimizer steps of 2 members against the lone runs, every pretext (its draws included)."""
    kw = dict(latent_dim=4, epochs=3, min_steps=0, patience=10, batch_size=4096, display_progressbar=False)
    ens = train_ensemble(digits, [{"pretext": pretext, "seed": s} for s in (0, 3)], **kw)
    lone = [train_encoder(digits, pretext, seed=s, **kw) for s in (0, 3)]
    untrained = train_encoder(digits, pretext, seed=0, **{**kw, "epochs": 1, "lr": 1e-12})
    for e, lo in zip(ens, lone):
        assert _rel_diff(e, lo) < 1e-4, pretext
        np.testing.assert_allclose(e.history["val_loss"], lo.history["val_loss"], rtol=1e-5)
    assert _rel_diff(ens[0], untrained) > 1e-3  # it did train: the comparison above is not of two initial states


@pytest.mark.parametrize("threaded", [False, True])
def test_per_member_early_stopping_matches_lone_runs(breast_cancer, threaded, monkeypatch):
    """Members stop at different epochs (12, 17, 16 here); each stops, keeps its best weights and its
    checkpoints where its lone run does, though the ensemble trains on until the last member stops. Threaded: the
    draws made one epoch ahead on threads (as on a GPU) are the same draws."""
    monkeypatch.setattr(lfeval.models.ensemble, "THREADED", threaded)
    kw = dict(latent_dim=3, epochs=60, min_steps=0, patience=3, lr=1e-2, checkpoints=3, display_progressbar=False)
    ens = train_ensemble(breast_cancer, [{"pretext": "denoising", "seed": s} for s in (0, 1, 2)], **kw)
    lone = [train_encoder(breast_cancer, "denoising", seed=s, **kw) for s in (0, 1, 2)]
    lengths = [len(e.history["val_loss"]) for e in ens]
    assert len(set(lengths)) > 1 and max(lengths) < 60  # the stops differ, and early stopping acted
    for e, lo in zip(ens, lone):
        assert len(e.history["val_loss"]) == len(lo.history["val_loss"])
        assert e.history["best_epoch"] == lo.history["best_epoch"]
        assert e.history["steps"] == lo.history["steps"]  # counted by the lone run, by its rule in the ensemble
        np.testing.assert_allclose(e.history["val_loss"], lo.history["val_loss"], rtol=1e-5)
        assert [c["epoch"] for c in e.checkpoints] == [c["epoch"] for c in lo.checkpoints]
        assert _rel_diff(e, lo) < 1e-4
        x = breast_cancer.x_test
        torch.testing.assert_close(e(x), lo(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("members", [
    [{"pretext": p, "seed": s} for p in ("reconstruction", "denoising", "inpainting") for s in (0, 1)],
    [{"pretext": "beta-vae", "seed": 0, "beta": b} for b in (1.0, 5.0)],
    [{"pretext": "contrastive", "seed": s} for s in (0, 1)],
], ids=["autoencoders", "beta-vae", "contrastive"])
def test_static_buffers_give_the_eager_members_bit_for_bit(digits, monkeypatch, members):
    """A CUDA graph's bookkeeping in an ensemble (lfeval.models.graphed.StaticStep: each step's stacked batches and
    draws copied into fixed buffers, the last smaller batch eager) trains the eager ensemble's members bit for
    bit, with a cosine schedule and a last batch of 231 (1,131 training digits at batch 300)."""
    import dataclasses

    from lfeval.models import ensemble
    from lfeval.models.graphed import StaticStep

    ds = dataclasses.replace(digits, name="digits-static")  # not another test's cached members
    kw = dict(latent_dim=3, epochs=2, batch_size=300, min_steps=0, lr_schedule="cosine", checkpoints=2,
              display_progressbar=False)
    eager = train_ensemble(ds, members, **kw)
    monkeypatch.setattr(ensemble, "_step_kind", lambda cuda_graph, device: StaticStep if cuda_graph else None)
    static = train_ensemble(ds, members, cuda_graph=True, **kw)
    for a, b in zip(eager, static):
        assert a.history == b.history and a.history["steps"] == 8
        for sa, sb in [(a.pretext_model.state_dict(), b.pretext_model.state_dict())] + [
                (x["state_dict"], y["state_dict"]) for x, y in zip(a.checkpoints, b.checkpoints)]:
            assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.filterwarnings("ignore:The reconstruction encoder on breast_cancer looks collapsed")
def test_cache_is_per_member_and_apart_from_lone_runs(breast_cancer, tmp_path):
    kw = dict(latent_dim=3, epochs=2, display_progressbar=False, cache_dir=tmp_path)
    first = train_ensemble(breast_cancer, [{"pretext": "reconstruction", "seed": s} for s in (0, 1)], **kw)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    train_encoder(breast_cancer, "reconstruction", seed=0, **kw)  # a lone run: its own file
    assert len(list(tmp_path.glob("*.pt"))) == 3
    again = train_ensemble(breast_cancer, [{"pretext": "reconstruction", "seed": s} for s in (1, 0, 2)], **kw)
    assert [e.config["seed"] for e in again] == [1, 0, 2]
    assert all(e.config["trainer"] == "ensemble" for e in again)
    for a, b in ((again[1], first[0]), (again[0], first[1])):
        assert _rel_diff(a, b) == 0.0
    assert len(list(tmp_path.glob("*.pt"))) == 4


def test_members_of_several_tasks_share_steps_where_their_loss_does(digits):
    """Reconstruction, denoising and inpainting share one step (one loss code), VAEs share one over β, the
    classifier trains apart; each member still equals its lone run (3 full-batch steps)."""
    kw = dict(latent_dim=3, epochs=3, min_steps=0, batch_size=4096, display_progressbar=False)
    members = [{"pretext": "denoising", "seed": 1, "sigma": 0.5}, {"pretext": "beta-vae", "seed": 0, "beta": 5.0},
               {"pretext": "classification", "seed": 0}, {"pretext": "inpainting", "seed": 0},
               {"pretext": "beta-vae", "seed": 0, "beta": 1.0}, {"pretext": "reconstruction", "seed": 2}]
    ens = train_ensemble(digits, members, **kw)
    for member, e in zip(members, ens):
        options = {k: v for k, v in member.items() if k not in ("pretext", "seed")}
        lone = train_encoder(digits, member["pretext"], seed=member["seed"], **options, **kw)
        assert (e.pretext, e.config["seed"], e.config["task"]) == (lone.pretext, lone.config["seed"],
                                                                   lone.config["task"])
        assert _rel_diff(e, lone) < 1e-4, member
        np.testing.assert_allclose(e.history["val_loss"], lone.history["val_loss"], rtol=1e-5)
    assert _rel_diff(ens[1], ens[4]) > 1e-3  # same seed and draws, β 5 and 1 in one step: β reached each member


@pytest.mark.parametrize("members", [{"pretext": "denoising", "seed": 0}, [], "denoising", [{"pretext": "denoising"}],
                                     [{"pretext": "denoising", "seed": -1}], [{"pretext": "denoising", "seed": 0}] * 2,
                                     [{"pretext": "jigsaw", "seed": 0}], [{"pretext": "denoising", "seed": 0, "q": 1}]])
def test_bad_members(breast_cancer, members):
    with pytest.raises(InvalidArgument, match="members|seed|pretext|option"):
        train_ensemble(breast_cancer, members, epochs=1, display_progressbar=False)


@pytest.fixture(scope="module")
def breast_cancer():
    return lfeval.data.load("breast_cancer")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine (the CPU checks run above)")


@CUDA
@pytest.mark.parametrize("pretext", ["denoising", "inpainting", "beta-vae", "classification"])
def test_cuda_ensemble_equals_cpu_lone_runs(digits, pretext):
    """On a GPU (threaded draws, fused Adam, TF32 off) 3 full-batch steps of 2 members match the CPU lone runs."""
    kw = dict(latent_dim=4, epochs=3, min_steps=0, patience=10, batch_size=4096, display_progressbar=False)
    ens = train_ensemble(digits, [{"pretext": pretext, "seed": s} for s in (0, 3)], device="cuda", **kw)
    lone = [train_encoder(digits, pretext, seed=s, **kw) for s in (0, 3)]
    for e, lo in zip(ens, lone):
        assert _rel_diff(e.cpu(), lo) < 1e-4, pretext
        np.testing.assert_allclose(e.history["val_loss"], lo.history["val_loss"], rtol=1e-4)


@CUDA
def test_cuda_graph_ensemble_equals_eager(digits, monkeypatch):
    """train_ensemble(cuda_graph=True) on a GPU: one replay per full batch after the warm-up steps, and each epoch's
    losses within 1e-3 relative of the eager ensemble's (3 autoencoder members, cosine schedule, batch 300)."""
    from lfeval.models.graphed import GraphedStep
    from lfeval.models.training import _validation_size

    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), replay(self))[1])
    members = [{"pretext": p, "seed": 0} for p in ("reconstruction", "denoising", "inpainting")]
    kw = dict(latent_dim=4, epochs=3, batch_size=300, min_steps=0, lr_schedule="cosine", device="cuda",
              display_progressbar=False)
    runs = {graph: train_ensemble(digits, members, cuda_graph=graph, **kw) for graph in (False, True)}
    n_train = len(digits.x_train) - _validation_size(len(digits.x_train), 0.1)
    assert len(replays) == 3 * (n_train // 300) - GraphedStep.WARMUP
    for a, b in zip(runs[False], runs[True]):
        for key in ("train_loss", "val_loss"):
            np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-3)


@CUDA
def test_cuda_similarity_rates_equal_cpu():
    from lfeval.metrics.functional import similarity_rates

    w = torch.randn(50, 300, generator=torch.Generator().manual_seed(0))
    y_train, y_test = torch.arange(300) % 10, torch.arange(50) % 10
    cpu = similarity_rates(w, y_train, y_test, [5, 30, 300])
    gpu = similarity_rates(w.cuda(), y_train, y_test, [5, 30, 300])  # labels on the CPU, the matrix on the GPU
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)


def test_a_killed_ensemble_resumes_where_it_stopped(breast_cancer, tmp_path, monkeypatch):
    """Progress saved after every epoch (SAVE_EVERY = 0); the run killed after its 4th save; started again, it
    finishes with the weights, histories and checkpoints of an uninterrupted run, bit for bit, and removes its
    progress folder."""
    from lfeval.models import ensemble

    members = [{"pretext": "denoising", "seed": s} for s in (0, 1, 2)]
    kw = dict(latent_dim=3, epochs=12, min_steps=0, patience=3, lr=1e-2, checkpoints=3, display_progressbar=False)
    whole = train_ensemble(breast_cancer, members, cache_dir=tmp_path / "whole", **kw)

    monkeypatch.setattr(ensemble, "SAVE_EVERY", 0.0)
    save, saves = ensemble._save, []

    def save_then_die(folder, epoch, *args):
        save(folder, epoch, *args)
        saves.append(epoch)
        if len(saves) == 4:
            raise KeyboardInterrupt
    monkeypatch.setattr(ensemble, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(breast_cancer, members, cache_dir=tmp_path / "killed", **kw)
    assert saves == [0, 1, 2, 3] and list((tmp_path / "killed").glob("ensemble-*.progress/state.pt"))
    resumed = train_ensemble(breast_cancer, members, cache_dir=tmp_path / "killed", **kw)
    assert saves[4] == 4  # it went on from epoch 4, not from the start
    for a, b in zip(resumed, whole):
        assert _rel_diff(a, b) == 0.0
        assert a.history["val_loss"] == b.history["val_loss"] and a.history["best_epoch"] == b.history["best_epoch"]
        for ca, cb in zip(a.checkpoints, b.checkpoints):
            assert ca["epoch"] == cb["epoch"]
            assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in cb["state_dict"])
    assert not list((tmp_path / "killed").glob("ensemble-*.progress"))
