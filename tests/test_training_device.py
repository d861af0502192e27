"""Training on any device (issue 26): every training-time draw comes from a seeded CPU generator and is moved to
the data's device and dtype (the same seed gives the same draws on the CPU and a GPU), the loop reads the device
once per epoch, and the CUDA run agrees with the CPU's. The GPU tests run only where there is one."""

from __future__ import annotations

import sys

import pytest
import torch

import lfeval
from lfeval.modalities import get_modality
from lfeval.models import PretextModel, build_encoder, make_task, train_encoder
from lfeval.models import training as training_mod
from lfeval.models.graphed import EagerStep, GraphedStep, StaticStep
from lfeval.models.losses import AlignmentLoss
from lfeval.models.vae import VAEEncoder

#: a few epochs on a few digits do not train a useful encoder, and need not
pytestmark = pytest.mark.filterwarnings("ignore:.*looks collapsed")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine (the CPU checks run above)")
SHAPES = {"image": (6, 1, 8, 8), "tabular": (6, 1, 30), "time_series": (6, 2, 40)}


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


def _x(modality="image", dtype=torch.float32, device="cpu"):
    return torch.rand(SHAPES[modality], generator=_gen(11)).to(device, dtype)


def _state_after(fn, x):
    g = _gen()
    fn(x, g)
    return g.get_state()


# ---------------------------------------------------------------------------------------------- the draws
def test_denoising_and_inpainting_draw_on_the_cpu():
    """The corruptions equal the CPU draw of the same seed, in x's dtype (float64 too)."""
    for dtype in (torch.float32, torch.float64):
        x = _x(dtype=dtype)
        noise = torch.randn(x.shape, generator=_gen()).to(dtype)
        assert torch.equal(make_task("denoising", "image").corrupt(x, _gen()), x + 0.3 * noise)
        keep = (torch.rand(x.shape, generator=_gen()) >= 0.2).to(dtype)
        out = make_task("inpainting", "image").corrupt(x, _gen())
        assert out.dtype == dtype and torch.equal(out, x * keep)


@pytest.mark.parametrize("pretext", ["denoising", "inpainting", "contrastive"])
@pytest.mark.parametrize("modality", sorted(SHAPES))
def test_draws_do_not_depend_on_the_device(pretext, modality):
    """With x on another device ('meta' stands in for a GPU here) the draws still come from the CPU generator:
    it advances exactly as with CPU data, and the result lands on x's device."""
    task = make_task(pretext, modality)
    fn = task.augment if pretext == "contrastive" else task.corrupt
    cpu = _state_after(fn, _x(modality))
    assert torch.equal(_state_after(fn, _x(modality, device="meta")), cpu)
    assert torch.equal(_state_after(fn, _x(modality, torch.float64)), cpu)
    assert fn(_x(modality, device="meta"), _gen()).device.type == "meta"


@pytest.mark.parametrize("modality", sorted(SHAPES))
def test_augmentations_same_draws_in_float64(modality):
    """A float64 batch gets the float32 CPU draws, cast: its view equals the float32 view to float32 rounding."""
    aug = get_modality(modality).augment
    v32, v64 = aug(_x(modality), _gen()), aug(_x(modality, torch.float64), _gen())
    assert v64.dtype == torch.float64
    torch.testing.assert_close(v64.float(), v32, rtol=0, atol=1e-5)


def test_fixed_views_use_a_cpu_generator():
    """Contrastive.example_extra and AlignmentLoss.extra: the seed-0 view of the CPU generator, on any device."""
    x = _x()
    task = make_task("contrastive", "image")
    ref = task.augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(task.example_extra(x), ref)
    assert torch.equal(AlignmentLoss("image").extra(x), ref)
    assert task.example_extra(_x(device="meta")).device.type == "meta"


def test_vae_noise_is_the_cpu_draw():
    """The reparameterisation noise eps of z = mu + sigma * eps is the CPU draw of the seed."""
    torch.manual_seed(0)
    model = PretextModel(VAEEncoder(build_encoder("image", (1, 8, 8), 2 * 3)), make_task("beta-vae", "image"))
    x = _x()
    with torch.no_grad():
        mu, logvar, z = model.task.sample(model, x, model.task.draws(model, x, _gen())[0])
    eps = torch.randn(mu.shape, generator=_gen())
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * eps, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- the loop
def _small(digits, n=300):
    import dataclasses

    return dataclasses.replace(digits, x_train=digits.x_train[:n], y_train=digits.y_train[:n])


def test_same_seed_same_weights(digits):
    ds = _small(digits)
    for pretext in ("denoising", "contrastive"):
        a, b = (train_encoder(ds, pretext, latent_dim=3, epochs=2, min_steps=0, seed=5, display_progressbar=False)
                for _ in range(2))
        for (name, p), q in zip(a.pretext_model.state_dict().items(), b.pretext_model.state_dict().values()):
            assert torch.equal(p, q), (pretext, name)


def _record_training_losses(monkeypatch, record):
    """Call ``record(x, loss)`` with each training step's batch and loss (the loss every step object of
    lfeval.models.graphed minimises; validation calls PretextModel.loss instead)."""
    init = EagerStep.__init__

    def recording_init(self, losses, *args, **kwargs):
        def recorded(x, y, drawn):
            out = losses(x, y, drawn)
            record(x, out)
            return out

        init(self, recorded, *args, **kwargs)

    monkeypatch.setattr(EagerStep, "__init__", recording_init)


def test_history_is_the_mean_batch_loss(digits, monkeypatch):
    """train_loss = the batch losses weighted by batch size over the training samples; val_loss = the one
    validation call's loss (the epoch's sum stays on the device and is read once)."""
    calls = []
    loss = PretextModel.loss

    def recording(self, x, y=None, generator=None):
        out = loss(self, x, y, generator)
        calls.append((self.training, float(out.detach()), len(x)))
        return out

    monkeypatch.setattr(PretextModel, "loss", recording)
    _record_training_losses(monkeypatch, lambda x, out: calls.append((True, float(out.detach()), len(x))))
    ds = _small(digits, 203)  # 20 validation, 183 training: batches of 25, the last one of 8
    enc = train_encoder(ds, "inpainting", latent_dim=3, epochs=1, batch_size=25, min_steps=0,
                        display_progressbar=False)
    batches = [(v, n) for training, v, n in calls if training]
    assert [n for _, n in batches] == [25] * 7 + [8]
    assert enc.history["train_loss"] == [pytest.approx(sum(v * n for v, n in batches) / 183, rel=1e-12)]
    assert enc.history["val_loss"] == [next(v for training, v, _ in calls if not training)]


def test_one_read_of_the_device_per_epoch(digits, monkeypatch):
    """lfeval's training code never reads a tensor's value per batch (each read is a host-device sync on a GPU):
    one read per epoch, of the epoch's train and validation loss together."""
    reads = []

    def counted(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if "lfeval" in sys._getframe(1).f_code.co_filename:
                reads.append(name)
            return original(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    ds = _small(digits)
    model = PretextModel(build_encoder("image", (1, 8, 8), 3), make_task("denoising", "image"))
    history, *_ = training_mod._fit(model, ds.x_train, ds.y_train, 30, "denoising", 3, 16, 1e-3, 0.0, 10, 0, 0, 0,
                                    torch.device("cpu"), False)
    assert len(history["train_loss"]) == 3 and len(reads) == 3, reads


@pytest.mark.parametrize("pretext", ["reconstruction", "denoising", "inpainting", "classification", "contrastive",
                                     "beta-vae", "tc-vae"])
def test_static_buffers_give_the_eager_weights_bit_for_bit(digits, pretext):
    """A CUDA graph's bookkeeping (lfeval.models.graphed.StaticStep: each full batch gathered into fixed buffers,
    its draws made as the eager step makes them and copied in, the last smaller batch eager) trains the same
    weights as the eager loop, bit for bit, with a cosine schedule and a last batch of 20."""
    ds = _small(digits)  # 270 to train on: batches of 50, the last one of 20
    plan = training_mod._plan(ds, pretext, 3, 2, 50, 1e-3, 1e-5, 5, 0, 2, 0.1, "cpu", 1, {}, "cosine")
    runs = []
    for step in (None, StaticStep):
        model = training_mod._new_model(ds, plan, 0)
        history, states, best, _ = training_mod._fit(model, plan["x"], ds.y_train, plan["n_val"], pretext, 2, 50,
                                                     1e-3, 1e-5, 5, 0, 0, 2, torch.device("cpu"), False, "cosine",
                                                     step)
        runs.append((history, states, best))
    (h0, s0, b0), (h1, s1, b1) = runs
    assert h0 == h1 and h0["steps"] == 12
    for a, b in [(b0, b1)] + [(x["state_dict"], y["state_dict"]) for x, y in zip(s0, s1)]:
        assert all(torch.equal(a[k], b[k]) for k in a), pretext


def test_static_buffers_read_the_device_once_per_epoch_too(digits, monkeypatch):
    """StaticStep adds no host read of the device: still the epoch's one."""
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name, **kwargs):
            if "lfeval" in sys._getframe(1).f_code.co_filename:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    ds = _small(digits)
    model = PretextModel(build_encoder("image", (1, 8, 8), 3), make_task("denoising", "image"))
    history, *_ = training_mod._fit(model, ds.x_train, ds.y_train, 30, "denoising", 3, 16, 1e-3, 0.0, 10, 0, 0, 0,
                                    torch.device("cpu"), False, "cosine", StaticStep)
    assert len(history["train_loss"]) == 3 and len(reads) == 3, reads


def test_unlabelled_data_trains(digits):
    import dataclasses

    ds = dataclasses.replace(_small(digits), y_train=None, y_test=None)
    enc = train_encoder(ds, "denoising", latent_dim=3, epochs=1, min_steps=0, display_progressbar=False)
    assert enc.pretext == "denoising"
    with pytest.raises(lfeval.errors.InvalidInput, match="y_train is None"):
        train_encoder(ds, "classification", latent_dim=3, epochs=1, display_progressbar=False)


@pytest.mark.parametrize("step", [None, StaticStep], ids=["eager", "static-buffers"])
def test_float64_model_trains(digits, step):
    """A float64 pretext model trains on float64 data: every draw is cast to the data's dtype (the CUDA graph's
    buffers too: they take the batch's and the draws' dtype)."""
    ds = _small(digits)
    for pretext in ("denoising", "inpainting", "contrastive", "beta-vae"):
        torch.manual_seed(0)
        net = build_encoder("image", (1, 8, 8), 6 if pretext == "beta-vae" else 3)
        model = PretextModel(VAEEncoder(net) if pretext == "beta-vae" else net, make_task(pretext, "image"),
                             n_classes=10).double()
        history, *_ = training_mod._fit(model, ds.x_train.double(), ds.y_train, 30, pretext, 1, 32, 1e-3, 0.0, 10,
                                        0, 0, 0, torch.device("cpu"), False, "constant", step)
        assert all(map(lambda v: v == v and abs(v) < float("inf"), history["train_loss"] + history["val_loss"]))


def test_training_turns_tf32_off(digits, monkeypatch):
    """train_encoder runs under lfeval.precision.precise: TF32 off while it trains (unless asked for), the
    caller's flags back afterwards."""
    from lfeval import precision

    flags, seen, fit = precision._flags(), [], training_mod._fit

    def spy(*args, **kwargs):
        seen.append([getattr(obj, attr) for obj, attr in flags])
        return fit(*args, **kwargs)

    monkeypatch.setattr(training_mod, "_fit", spy)
    saved = [getattr(obj, attr) for obj, attr in flags]
    try:
        for obj, attr in flags:
            setattr(obj, attr, precision._value(attr, True))
        train_encoder(_small(digits), "reconstruction", latent_dim=3, epochs=1, min_steps=0, display_progressbar=False)
        assert seen == [[precision._value(attr, False) for _, attr in flags]]
        assert [getattr(obj, attr) for obj, attr in flags] == [precision._value(attr, True) for _, attr in flags]
    finally:
        for (obj, attr), value in zip(flags, saved):
            setattr(obj, attr, value)


@pytest.fixture
def conv_outputs(monkeypatch):
    """(dtype, grad enabled) of every Conv2d output while the test runs (vmapped ensembles included)."""
    seen, forward = [], torch.nn.Conv2d.forward

    def spy(self, x):
        out = forward(self, x)
        seen.append((out.dtype, torch.is_grad_enabled()))
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    return seen


def test_bf16_precision_reaches_training(digits, conv_outputs):
    """Under lfeval.precision.use("bf16") each training step runs under bfloat16 autocast, lone and ensembled; the
    validation pass, the weights and the encoder stay float32; the config (and so the cache key) records the
    precision, so a float32 run never loads bf16 weights; and the encoder trains to float32's quality (digits, 8
    epochs, measured: validation MSE 0.94x float32's lone, 0.97x ensembled)."""
    kw = dict(latent_dim=4, epochs=8, min_steps=0, patience=20, display_progressbar=False)
    exact = train_encoder(digits, "reconstruction", seed=0, **kw)
    assert conv_outputs and {dtype for dtype, _ in conv_outputs} == {torch.float32}
    conv_outputs.clear()
    with lfeval.precision.use("bf16"):
        half = train_encoder(digits, "reconstruction", seed=0, **kw)
    assert {dtype for dtype, grad in conv_outputs if grad} == {torch.bfloat16}  # every training step
    assert {dtype for dtype, grad in conv_outputs if not grad} == {torch.float32}  # the validation pass
    with lfeval.precision.use("bf16"):
        # under vmap, autocast runs the convolutions' products in bfloat16 but adds their bias in float32, so their
        # outputs are float32 (pytorch/pytorch#192617): the weights below show that it took effect
        [member] = lfeval.models.train_ensemble(digits, [{"pretext": "reconstruction", "seed": 0}], **kw)
    first = "encoder.features.0.weight"
    best = exact.history["val_loss"][exact.history["best_epoch"]]
    for enc in (half, member):
        assert enc.config["precision"] == "bf16" and "precision" not in exact.config
        assert all(p.dtype == torch.float32 for p in enc.pretext_model.parameters())
        # float32's lone and ensembled weights agree to 3e-7; bfloat16 moves them by 0.14
        delta = (enc.pretext_model.state_dict()[first] - exact.pretext_model.state_dict()[first]).abs().max()
        assert delta > 1e-3
        assert enc.history["val_loss"][enc.history["best_epoch"]] < 1.1 * best


# ---------------------------------------------------------------------------------------------- on a GPU
@CUDA
@pytest.mark.parametrize("pretext", ["reconstruction", "denoising", "inpainting", "contrastive", "beta-vae"])
def test_cuda_first_step_equals_cpu(digits, monkeypatch, pretext):
    """Same seed on 'cuda' and 'cpu': the same draws, so the first step's loss agrees within 1e-4 relative, and
    the epoch's losses within 1e-3."""
    first = {}  # device type -> the loss of the first training step
    _record_training_losses(monkeypatch, lambda x, out: first.setdefault(x.device.type, float(out.detach())))
    runs = {device: train_encoder(digits, pretext, latent_dim=4, epochs=1, min_steps=0, seed=0, device=device,
                                  display_progressbar=False) for device in ("cpu", "cuda")}
    assert abs(first["cuda"] - first["cpu"]) <= 1e-4 * abs(first["cpu"]), first
    for key in ("train_loss", "val_loss"):
        a, b = runs["cpu"].history[key][0], runs["cuda"].history[key][0]
        assert abs(a - b) <= 1e-3 * abs(a), (key, a, b)


@CUDA
def test_cuda_fixed_views_equal_cpu():
    """The contrastive pretext's fixed view of CUDA data is the CPU's view (same draws), to float rounding."""
    x = _x()
    task = make_task("contrastive", "image")
    torch.testing.assert_close(task.example_extra(x.cuda()).cpu(), task.example_extra(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(make_task("denoising", "image").corrupt(x.cuda(), _gen()).cpu(),
                               make_task("denoising", "image").corrupt(x, _gen()), rtol=0, atol=1e-6)


@CUDA
@pytest.mark.parametrize("pretext", ["reconstruction", "denoising", "contrastive", "beta-vae"])
def test_cuda_graph_training_equals_eager(digits, monkeypatch, pretext):
    """train_encoder(cuda_graph=True) replays one CUDA graph per full batch after GraphedStep.WARMUP eager steps,
    and trains what the eager CUDA loop trains: the same draws and learning rates (a cosine schedule), each
    epoch's losses within 1e-3 relative (float32 rounding: the learning rate is a float32 device tensor)."""
    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), replay(self))[1])
    runs = {graph: train_encoder(digits, pretext, latent_dim=4, epochs=3, batch_size=64, min_steps=0, seed=0,
                                 device="cuda", lr_schedule="cosine", cuda_graph=graph, display_progressbar=False)
            for graph in (False, True)}
    n_train = len(digits.x_train) - training_mod._validation_size(len(digits.x_train), 0.1)
    assert len(replays) == 3 * (n_train // 64) - GraphedStep.WARMUP
    for key in ("train_loss", "val_loss"):
        for a, b in zip(runs[False].history[key], runs[True].history[key]):
            assert abs(a - b) <= 1e-3 * abs(a), (key, a, b)
