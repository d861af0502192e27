"""Learning-rate schedules of train_encoder and train_ensemble (option ``lr_schedule``): the constant default is
exactly the training it was before the option existed (same weights, same config and cache key), and ``"cosine"``
sets each step's learning rate to the documented warm-up-then-cosine formula."""

from __future__ import annotations

import math

import pytest
import torch

import lfeval
from lfeval.errors import InvalidArgument, UnknownName
from lfeval.models import train_encoder, train_ensemble
from lfeval.models import training as training_mod

#: a few epochs on digits do not train a useful encoder, and need not
pytestmark = pytest.mark.filterwarnings("ignore:.*looks collapsed")
KW = dict(latent_dim=4, epochs=3, min_steps=0, patience=10, seed=0, display_progressbar=False)
N_TRAIN = 1257 - 126  # digits' training split less the validation split
STEPS = math.ceil(N_TRAIN / 64)  # per epoch at the default batch of 64 (18: the last batch holds 43)


def _formula(t: int, total: int, lr: float) -> float:
    """The docstring's formula, written out again: linear warm-up over 5% of the steps, then cosine to 0."""
    warm = max(1, round(0.05 * total))
    if t < warm:
        return lr * (t + 1) / warm
    return lr * (1 + math.cos(math.pi * (t - warm) / (total - warm))) / 2


def _same_weights(a, b) -> bool:
    sa, sb = a.pretext_model.state_dict(), b.pretext_model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def step_lrs(monkeypatch):
    """The learning rate of every Adam step taken while the test runs (read from the optimizer at the step)."""
    seen, step = [], torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    return seen


def test_default_is_the_constant_schedule_unchanged(digits, tmp_path):
    """The default call and lr_schedule="constant" give the same weights bit for bit, the same config (no schedule
    entry, so the cache key of weights trained before the option existed) and the same cache file."""
    default = train_encoder(digits, "reconstruction", cache_dir=tmp_path, **KW)
    constant = train_encoder(digits, "reconstruction", lr_schedule="constant", **KW)
    assert _same_weights(default, constant)
    assert default.config == constant.config and "lr_schedule" not in default.config
    assert "lr" not in default.history and default.history["val_loss"] == constant.history["val_loss"]
    plan = training_mod._plan(digits, "reconstruction", 4, 3, None, 1e-3, 1e-5, 10, 0, 0, 0.1, None, None, {})
    assert [p.name for p in tmp_path.iterdir()] == [training_mod._cache_file(tmp_path, digits, plan, 0,
                                                                             default.config).name]


def test_cosine_steps_follow_the_formula(digits, step_lrs):
    """Every step's learning rate is the formula's (warm-up to the peak `lr`, cosine towards 0); the per-epoch
    history and the checkpoints record each epoch's mean; the weights differ from the constant schedule's."""
    lr, total = 2e-3, 3 * STEPS
    enc = train_encoder(digits, "reconstruction", lr=lr, lr_schedule="cosine", checkpoints=3, **KW)
    expected = [_formula(t, total, lr) for t in range(total)]
    assert len(step_lrs) == total
    assert step_lrs == pytest.approx(expected, rel=1e-12, abs=0)
    warm = round(0.05 * total)
    assert step_lrs[0] == pytest.approx(lr / warm) and max(step_lrs) == pytest.approx(lr)
    assert step_lrs[:warm] == sorted(step_lrs[:warm]) and step_lrs[warm:] == sorted(step_lrs[warm:], reverse=True)
    assert step_lrs[-1] < 0.01 * lr  # ends near the floor, 0
    means = [sum(expected[e * STEPS:(e + 1) * STEPS]) / STEPS for e in range(3)]
    assert enc.history["lr"] == pytest.approx(means, rel=1e-12)
    assert enc.checkpoints and all(c["lr"] == pytest.approx(means[c["epoch"]], rel=1e-12) for c in enc.checkpoints)
    assert training_mod.scheduled_lr("cosine", lr, 5, total) == pytest.approx(expected[5], rel=1e-15)

    step_lrs.clear()
    constant = train_encoder(digits, "reconstruction", lr=lr, **KW)
    assert step_lrs == [lr] * total
    assert not _same_weights(enc, constant)
    assert enc.config["lr_schedule"] == "cosine" and enc.config != constant.config


def test_cosine_is_cached_apart(digits, tmp_path):
    """The schedule is part of the cache key: a cosine run does not reuse the constant run's weights, and loads
    its own back."""
    constant = train_encoder(digits, "reconstruction", cache_dir=tmp_path, **KW)
    cosine = train_encoder(digits, "reconstruction", lr_schedule="cosine", cache_dir=tmp_path, **KW)
    assert len(list(tmp_path.iterdir())) == 2 and not _same_weights(constant, cosine)
    again = train_encoder(digits, "reconstruction", lr_schedule="cosine", cache_dir=tmp_path, **KW)
    assert _same_weights(again, cosine) and again.history["lr"] == cosine.history["lr"]


@pytest.mark.parametrize("bad", ["cosin", "Cosine", None, 1])
def test_bad_schedule_names_the_option(digits, bad):
    with pytest.raises(UnknownName, match="lr_schedule"):
        train_encoder(digits, "reconstruction", lr_schedule=bad, **KW)
    with pytest.raises(InvalidArgument, match="lr_schedule"):
        train_ensemble(digits, [{"pretext": "reconstruction", "seed": 0}], lr_schedule=bad,
                       **{k: v for k, v in KW.items() if k != "seed"})


def test_ensemble_follows_the_same_schedule(digits, step_lrs):
    """train_ensemble's steps take the lone run's learning rates, and its members record them as the lone run
    does; the default ensemble stays constant."""
    kw = {k: v for k, v in KW.items() if k != "seed"}
    members = [{"pretext": "reconstruction", "seed": 0}, {"pretext": "denoising", "seed": 1}]
    ens = train_ensemble(digits, members, lr_schedule="cosine", checkpoints=2, **kw)
    ens_lrs = list(step_lrs)
    step_lrs.clear()
    lone = train_encoder(digits, "reconstruction", lr_schedule="cosine", checkpoints=2, **KW)
    assert ens_lrs == step_lrs and len(ens_lrs) == 3 * STEPS
    assert ens[0].history["lr"] == lone.history["lr"] == ens[1].history["lr"]
    assert [c["lr"] for c in ens[0].checkpoints] == [c["lr"] for c in lone.checkpoints]
    assert ens[0].config["lr_schedule"] == "cosine"
    torch.testing.assert_close(torch.tensor(ens[0].history["val_loss"]), torch.tensor(lone.history["val_loss"]),
                               rtol=1e-4, atol=0)
    step_lrs.clear()
    default = train_ensemble(digits, members[:1], **kw)
    assert set(step_lrs) == {1e-3} and "lr" not in default[0].history and "lr_schedule" not in default[0].config


def test_schedule_is_exported():
    assert training_mod.LR_SCHEDULES == ("constant", "cosine")
    assert lfeval.models.train_encoder is train_encoder


def test_run_config_trains_its_pretexts_with_these_settings(tmp_path):
    """``lfeval run``'s ``batch_size``, ``lr`` and ``lr_schedule`` reach training: the run's encoder has the weights
    of train_encoder called with them, and config.json records them only when they are not the defaults."""
    from lfeval.config import TRAINING_DEFAULTS, RunConfig
    from lfeval.pipeline.stages import RunData

    settings = dict(batch_size=128, lr=2e-3, lr_schedule="cosine")
    config = RunConfig(pretexts=["reconstruction"], latent_dim=4, epochs=3, **settings, checkpoints=0,
                       cache_dir=str(tmp_path / "cache"), explainers=["Saliency", "Random"], example_methods=[],
                       metrics=["RepresentationShift"], meta_metrics=[], quiet=True)
    ran = RunData(config).encoder("reconstruction")
    alone = train_encoder(lfeval.data.load("digits"), "reconstruction", latent_dim=4, epochs=3, **settings, seed=0,
                          display_progressbar=False)
    assert _same_weights(ran, alone)
    assert {k: ran.config[k] for k in settings} == settings
    assert {k: config.to_dict()[k] for k in settings} == settings
    default = RunConfig().to_dict()
    assert not set(TRAINING_DEFAULTS) & set(default)  # a run at the defaults records what it did before them
    assert RunConfig(lr=TRAINING_DEFAULTS["lr"] * 2).to_dict()["lr"] == 2e-3
