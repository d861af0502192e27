"""Training encoders on pretext tasks: Adam, early stopping on a validation split, a weight cache."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import precision as precision_mod
from .. import threads as threads_mod
from ..data.base import Dataset
from ..encoder import Encoder
from ..errors import InvalidArgument, InvalidInput
from ..files import replace_with
from ..precision import precise
from ..validation import check_choice, check_device, check_finite, check_number, check_positive_int
from .architectures import build_encoder
from .graphed import EagerStep, GraphedStep
from .pretext import PRETEXTS, PretextModel, make_task
from .probe import diagnose
from .vae import VAE_PRETEXTS, VAEEncoder

#: bump an architecture family's version when it changes, so cached weights are not reused (conv 2: the decoder's
#: NearestUpsample, whose gradient rounds differently)
_ARCH_VERSION = {"conv": 2, "mlp": 1, "lstm": 2}
#: bump a pretext head's version when it changes (contrastive 2: no ReLU in front of the projection head)
_HEAD_VERSION = {"contrastive": 2}

#: the smallest batch a pretext task trains on, where it is above 1 (NT-Xent contrasts the inputs of a batch)
_MIN_BATCH = {"contrastive": 2}


def min_batch_size(pretext: str) -> int:
    """The smallest ``batch_size`` that ``pretext`` trains with (2 for ``"contrastive"``, else 1)."""
    return _MIN_BATCH.get(pretext, 1)


#: learning-rate schedules of :func:`train_encoder` (option ``lr_schedule``; see :func:`scheduled_lr`)
LR_SCHEDULES = ("constant", "cosine")
#: ``lr_schedule="cosine"``: the fraction of the planned optimizer steps spent in the linear warm-up
COSINE_WARMUP = 0.05
#: ``lr_schedule="cosine"``: the fraction of ``lr`` that the cosine decay ends at (after the last planned step)
COSINE_FLOOR = 0.0


def scheduled_lr(schedule: str, lr: float, step: int, total: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total`` planned steps (``epochs`` times the steps
    of an epoch), for peak learning rate ``lr``:

    - ``"constant"``: ``lr``;
    - ``"cosine"``: a linear warm-up over the first ``W = max(1, round(COSINE_WARMUP * total))`` steps,
      ``lr * (step + 1) / W``, then a cosine decay from ``lr`` to ``floor = COSINE_FLOOR * lr``:
      ``floor + (lr - floor) * (1 + cos(pi * (step - W) / (total - W))) / 2``. Steps ``W - 1`` and ``W`` run at
      ``lr``; the decay would reach ``floor`` at step ``total``, one past the last.

    Early stopping may end training before the schedule ends; the schedule is planned over ``epochs`` regardless.

    >>> [round(scheduled_lr("cosine", 1.0, t, 40), 3) for t in (0, 1, 2, 21, 39)]
    [0.5, 1.0, 1.0, 0.5, 0.002]
    """
    if schedule == "constant":
        return lr
    warmup = max(1, round(COSINE_WARMUP * total))
    if step < warmup:
        return lr * (step + 1) / warmup
    floor = COSINE_FLOOR * lr
    return floor + (lr - floor) * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) / 2.0


@precise
def train_encoder(
    ds: Dataset,
    pretext: str = "reconstruction",
    latent_dim: int = 8,
    epochs: int = 100,
    batch_size: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    patience: int = 10,
    min_steps: int = 500,
    seed: int = 0,
    cache_dir=None,
    checkpoints: int = 0,
    val_fraction: float = 0.1,
    device=None,
    display_progressbar: bool = True,
    threads=None,
    lr_schedule: str = "constant",
    cuda_graph: bool = False,
    **task_kwargs,
) -> Encoder:
    """Train an encoder on ``ds.x_train`` with a pretext task and return it in eval mode.

    Parameters
    ----------
    ds : Dataset
        From :func:`lfeval.data.load`. Only ``x_train`` is used, plus ``y_train`` for the
        classification pretext. The test split is never seen.
    pretext : {"reconstruction", "denoising", "inpainting", "classification", "contrastive"}
        The task (paper §4.2): denoising adds N(0, 0.3^2) noise, inpainting drops 20% of the
        features (Bernoulli), classification trains a linear head, contrastive is SimCLR NT-Xent.
        ``"beta-vae"`` / ``"tc-vae"`` (§4.3, option ``beta``) train a VAE; the encoder is mu(x).
    latent_dim : int
        Size d of the representation f(x) in R^d.
    epochs, batch_size, lr, weight_decay :
        Adam settings (the paper trains with Adam). ``batch_size=None`` is 64, or n_train // 8 (at least 8)
        on small data sets, so that an epoch takes several steps.
    lr_schedule : {"constant", "cosine"}
        ``"constant"`` (the default): every step at ``lr``. ``"cosine"``: ``lr`` is the peak of a linear warm-up
        over the first :data:`COSINE_WARMUP` (5%) of the ``epochs`` x steps-per-epoch planned steps, followed by a
        cosine decay to :data:`COSINE_FLOOR` x ``lr`` (0) at the planned end (:func:`scheduled_lr` gives the
        formula); the usual recipe for large batches in few epochs (benchmarks/bench_training.py's recipe rows).
        The learning rate is set on the host before each step (a Python float, no device read). With a schedule,
        ``history["lr"]`` and the checkpoints' ``"lr"`` hold each epoch's mean learning rate.
    cuda_graph : bool
        On CUDA only: record a full batch's training step (forward, backward, Adam) once as a CUDA graph and
        replay it for each batch (:mod:`lfeval.models.graphed`), which removes the host's per-step work that
        bounds a small encoder's speed on a GPU. The draws, batches and learning rates are the eager loop's; the
        weights equal eager CUDA training's within float32 rounding (the learning rate is a float32 device
        tensor), and the cache key is the same. Off by default until its speed is measured on a GPU
        (``benchmarks/bench_training.py --step-floor``).
    patience, min_steps : int
        Early stopping: once ``min_steps`` optimizer steps are done (small data sets need them to leave the
        plateau where a decoder outputs the mean input), stop after ``patience`` epochs without a better
        validation loss, and
        restore the best weights. The validation split is ``val_fraction`` of ``x_train``.
    seed : int
        Seeds weights, the validation split, shuffling and corruptions: same seed, same weights.
    cache_dir : path-like, optional
        Cache trained weights there, keyed by the whole configuration and the data's hash.
    checkpoints : int
        Keep K encoder states spread over training (``enc.checkpoints``, needed by TracIn).
    device : str or torch.device, optional
        Where to train (default CPU). The data move there once; every random draw (split, shuffling,
        corruptions, augmentations, VAE noise) comes from a CPU generator seeded with ``seed`` and is copied
        there, so a seed gives the same draws on the CPU and a GPU. On CUDA the optimizer is Adam's fused kernel
        (``fused=True``: the same update, rounded differently within float32), TF32 is off unless asked for with
        :func:`lfeval.precision.use`, and the host reads the device once per epoch. Under
        ``lfeval.precision.use("bf16")`` each step's forward pass and loss run under bfloat16 autocast (weights,
        Adam and the validation loss stay float32); a precision other than ``"highest"`` enters ``enc.config``
        and the cache key.
    threads : "auto", int or None
        torch's intra-op threads while training (:func:`lfeval.threads.limit`; the caller's setting is
        restored on return). None (the default) is the enclosing :func:`lfeval.threads.scope`'s setting
        (``lfeval run``'s), else "auto". "auto" (or ``LFEVAL_THREADS``) picks them from the model's size and
        this process's cores, never from the machine's load: oneDNN's convolution gradients depend on the
        thread count, and the same seed must give the same weights on a busy machine. A small model
        (the digits encoders) trains on one thread.
    **task_kwargs
        Task options: ``sigma`` (denoising), ``p`` (inpainting), ``temperature`` (contrastive).

    Examples
    --------
    >>> import lfeval
    >>> ds = lfeval.data.load("breast_cancer")
    >>> enc = lfeval.models.train_encoder(ds, "denoising", latent_dim=3, epochs=2, display_progressbar=False)
    >>> enc.pretext, enc.modality.name, tuple(enc(ds.x_test[:4]).shape), enc.training
    ('denoising', 'tabular', (4, 3), False)

    Returns
    -------
    lfeval.Encoder
        ``(N, *input_shape) -> (N, latent_dim)``, in eval mode, carrying the data set's modality and
        masking baseline, ``pretext``, ``pretext_model`` (the full model, whose per-example loss the
        loss-based example methods use), ``checkpoints`` (list of ``{"epoch", "lr", "state_dict"}``
        of the full model) and ``history``.
    """
    plan = _plan(ds, pretext, latent_dim, epochs, batch_size, lr, weight_decay, patience, min_steps, checkpoints,
                 val_fraction, device, threads, task_kwargs, lr_schedule)
    step = _step_kind(cuda_graph, plan["device"])
    seed = check_positive_int(seed, "seed", minimum=0)
    config = _config(ds, plan, seed)
    model = _new_model(ds, plan, seed)
    cache_file = _cache_file(cache_dir, ds, plan, seed, config)
    saved = _load_cached(cache_file, model, plan)
    if saved is not None:
        return _finish(model, saved["checkpoints"], saved["history"], config, ds)

    work = threads_mod.work_of(model, ds.input_shape, batch=plan["batch_size"])
    with threads_mod.limit(plan["threads"], work=work, adapt_to_load=False):
        history, states, best_state, best_epoch = _fit(model, plan["x"], ds.y_train, plan["n_val"], pretext,
                                                       plan["epochs"], plan["batch_size"], plan["lr"],
                                                       plan["weight_decay"], plan["patience"], plan["min_steps"], seed,
                                                       plan["checkpoints"], plan["device"], display_progressbar,
                                                       plan["lr_schedule"], step)
    model.load_state_dict(best_state)
    history["best_epoch"] = best_epoch
    kept = _spread(states[: best_epoch + 1], plan["checkpoints"])
    _store(cache_file, cache_dir, model, kept, history, config)
    return _finish(model, kept, history, config, ds)


def _plan(ds, pretext, latent_dim, epochs, batch_size, lr, weight_decay, patience, min_steps, checkpoints,
          val_fraction, device, threads, task_kwargs, lr_schedule="constant") -> dict:
    """Validate the training settings shared by every seed: a dict of them (``x``: the checked training inputs,
    ``n_val``: the validation split's size)."""
    if not isinstance(ds, Dataset):
        raise InvalidArgument(f"`ds` must be an lfeval.data.Dataset (from lfeval.data.load), got {type(ds).__name__}.")
    check_choice(pretext, PRETEXTS + VAE_PRETEXTS, "pretext")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    epochs, patience = check_positive_int(epochs, "epochs"), check_positive_int(patience, "patience")
    min_steps = check_positive_int(min_steps, "min_steps", minimum=0)
    if batch_size is None:  # 64, smaller on small data sets so an epoch is several steps (UCR: tens of series)
        batch_size = min(64, max(8, len(ds.x_train) // 8))
    batch_size = check_positive_int(batch_size, "batch_size", minimum=min_batch_size(pretext))
    checkpoints = check_positive_int(checkpoints, "checkpoints", minimum=0)
    lr, weight_decay = check_number(lr, "lr", strict=True), check_number(weight_decay, "weight_decay")
    lr_schedule = check_choice(lr_schedule, LR_SCHEDULES, "lr_schedule")
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 0.5:
        raise InvalidArgument(f"`val_fraction` must be in (0, 0.5), got {val_fraction!r}.")
    x_all = check_finite(ds.x_train, "ds.x_train")
    n_val = _validation_size(len(x_all), val_fraction)
    if len(x_all) - n_val < 2:
        raise InvalidInput(f"ds.x_train has {len(x_all)} samples: after the validation split ({n_val}) fewer than 2 "
                           "remain to train on. Load more training data.")
    if pretext == "classification" and ds.y_train is None:
        raise InvalidInput(f"The classification pretext needs labels, and {ds.name} has none (ds.y_train is None); "
                           "pick a self-supervised pretext such as 'reconstruction'.")
    if pretext == "classification" and len(torch.unique(ds.y_train)) < 2:
        raise InvalidInput("The classification pretext needs at least 2 classes in ds.y_train; pick another pretext.")
    task_kwargs = dict(task_kwargs)
    if pretext == "tc-vae":
        task_kwargs.setdefault("n_data", len(ds.x_train))
    make_task(pretext, ds.modality, **task_kwargs)  # unknown options fail here, before any training
    return dict(pretext=pretext, latent_dim=latent_dim, epochs=epochs, batch_size=batch_size, lr=lr,
                weight_decay=weight_decay, patience=patience, min_steps=min_steps, checkpoints=checkpoints,
                val_fraction=val_fraction, task=task_kwargs, device=check_device(device), lr_schedule=lr_schedule,
                threads=None if threads is None else threads_mod.check_threads(threads), x=x_all, n_val=n_val,
                precision=precision_mod.current())


def _step_kind(cuda_graph, device: torch.device):
    """:class:`~lfeval.models.graphed.GraphedStep` where ``cuda_graph`` asks for it (CUDA only), else None (the
    eager loop)."""
    if not isinstance(cuda_graph, bool):
        raise InvalidArgument(f"`cuda_graph` must be True or False, got {cuda_graph!r}.")
    if not cuda_graph:
        return None
    if device.type != "cuda":
        raise InvalidArgument(f"`cuda_graph=True` records the training step as a CUDA graph and needs "
                              f"device='cuda', got device={str(device)!r}; leave cuda_graph=False there.")
    return GraphedStep


def _config(ds: Dataset, plan: dict, seed: int, **extra) -> dict:
    """The configuration a trained encoder records (``enc.config``) and its cache key hashes."""
    keys = ("pretext", "latent_dim", "epochs", "batch_size", "lr", "weight_decay", "patience", "min_steps")
    return dict(data=ds.name, fingerprint=ds.fingerprint(), **{k: plan[k] for k in keys}, seed=seed,
                checkpoints=plan["checkpoints"], val_fraction=plan["val_fraction"], task=plan["task"],
                arch=_ARCH_VERSION.get(ds.modality.architecture, 1),
                **({"head": _HEAD_VERSION[plan["pretext"]]} if plan["pretext"] in _HEAD_VERSION else {}),
                **_schedule_config(plan["lr_schedule"]),
                **({} if plan["precision"] == "highest" else {"precision": plan["precision"]}),
                **extra)


def _schedule_config(schedule: str) -> dict:
    """The schedule's entries of the config (and so of the cache key): none for the constant default, so that its
    key is the one it had before schedules existed."""
    if schedule == "constant":
        return {}
    return {"lr_schedule": schedule, "lr_warmup": COSINE_WARMUP, "lr_floor": COSINE_FLOOR}


def _validation_size(n: int, val_fraction: float) -> int:
    """Examples of ``x_train`` held out for validation (at least one)."""
    return max(1, int(round(val_fraction * n)))


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in an epoch over ``n_train`` examples (a single leftover example is skipped, :func:`_epoch`)."""
    steps, left = divmod(n_train, batch_size)
    return steps + (left > 0 and not left < 2 <= batch_size)


def _new_model(ds: Dataset, plan: dict, seed: int) -> PretextModel:
    """The untrained full model, initialised from ``seed`` (the global RNG is seeded with it, as before training)."""
    torch.manual_seed(seed)
    pretext, latent_dim = plan["pretext"], plan["latent_dim"]
    if pretext in VAE_PRETEXTS:  # the network outputs (mu, logvar); the encoder explained is mu
        encoder = VAEEncoder(build_encoder(ds.modality, ds.input_shape, 2 * latent_dim))
    else:
        encoder = build_encoder(ds.modality, ds.input_shape, latent_dim)
    task = make_task(pretext, ds.modality, **plan["task"])
    return PretextModel(encoder, task, n_classes=ds.n_classes).to(plan["device"])


def _cache_file(cache_dir, ds: Dataset, plan: dict, seed: int, config: dict):
    if cache_dir is None:
        return None
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{ds.name}-{plan['pretext']}")  # a data set name may hold a path
    return Path(cache_dir) / f"{stem}-d{plan['latent_dim']}-s{seed}-{key}.pt"


def _load_cached(cache_file, model: PretextModel, plan: dict):
    """Load the cached weights into ``model``: the saved dict, or None when there is no usable cache file."""
    if cache_file is None or not cache_file.exists():
        return None
    try:  # weights_only: a planted or damaged file cannot run code, only fail to load
        saved = torch.load(cache_file, map_location=plan["device"], weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return saved
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not the weights lfeval wrote
        warnings.warn(f"Cached weights {cache_file} cannot be used ({type(exc).__name__}: {exc}); "
                      "training again and replacing them.", stacklevel=4)  # past train_encoder and @precise
        return None


def _store(cache_file, cache_dir, model: PretextModel, kept: list, history: dict, config: dict) -> None:
    if cache_file is None:
        return
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        saved = {"state_dict": model.state_dict(), "checkpoints": kept, "history": history, "config": config}
        replace_with(cache_file, lambda tmp: torch.save(saved, tmp))  # runs sharing the cache may race to write
    except OSError as exc:
        raise InvalidArgument(f"Cannot write the weight cache `cache_dir` {str(cache_dir)!r}: "
                              f"{exc.strerror or exc}. Choose a writable folder or cache_dir=None.") from None


def _adam(params, lr: float, weight_decay: float, device: torch.device,
          capturable: bool = False) -> torch.optim.Adam:
    """Adam: on the CPU the multi-tensor (foreach) implementation, whose weights equal the per-tensor one's bit for
    bit (those the cached weights hold); on CUDA the fused kernel, one launch per step (the same update, its
    float32 rounding may differ from the CPU's). ``capturable`` (CUDA): steppable inside a CUDA graph, its
    learning rate a device tensor that :func:`_set_lr` fills."""
    if device.type == "cuda":
        if capturable:
            return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), weight_decay=weight_decay,
                                    fused=True, capturable=True)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _split(x_all, y_all, n_val: int, gen: torch.Generator, device: torch.device) -> tuple:
    """``(x_train, y_train, x_val, y_val)`` on ``device``: a seeded permutation's first ``n_val`` examples
    validate (drawn from ``gen`` on the CPU; gathered on the device, one copy of the data there)."""
    perm = torch.randperm(len(x_all), generator=gen)
    if y_all is None:  # unlabelled data: placeholder labels, which the self-supervised tasks ignore
        y_all = torch.zeros(len(x_all), dtype=torch.long)
    if device.type != "cpu":  # split on the device: one copy of the data, gathered there
        x_all, y_all, perm = x_all.to(device), y_all.to(device), perm.to(device)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return (x_all[train_idx].to(device), y_all[train_idx].to(device), x_all[val_idx].to(device),
            y_all[val_idx].to(device))


def _epoch(model, step: EagerStep, x_tr, y_tr, batch_size: int, gen: torch.Generator, lrs=None) -> tuple:
    """One pass over the training split in a fresh order from ``gen``: ``(summed loss on the device, steps)``.
    ``step`` (:mod:`lfeval.models.graphed`) takes each batch with its draws; ``lrs``: the learning rate of each step
    (Python floats, set on the host), or None to leave the optimizer's."""
    model.train()
    device = x_tr.device
    order = torch.randperm(len(x_tr), generator=gen).to(device, non_blocking=True)  # batches are views of it
    total = step.reset()
    steps = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2 <= batch_size:  # a single leftover sample (and NT-Xent needs a negative): skipped
            continue
        if lrs is not None:  # read by the optimizer's step only
            _set_lr(step.opt, lrs[steps])
        steps += 1
        x, y = x_tr[idx], y_tr[idx]
        with precision_mod.autocast(device):  # the draws model.loss makes, in its order
            drawn = model.task.draws(model, x, gen)
        step.step(x, y, drawn)
    return total, steps


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate: a Python float, which Adam reads on the host at each step (the
    fused CUDA kernel included, so no device sync), or, for a capturable Adam, written into its device tensor (an
    asynchronous fill that the replayed graph reads)."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _epoch_lrs(schedule: str, lr: float, epoch: int, steps_per_epoch: int, epochs: int):
    """The learning rates of ``epoch``'s steps (None for the constant schedule: the optimizer's own ``lr``)."""
    if schedule == "constant":
        return None
    total = epochs * steps_per_epoch
    return [scheduled_lr(schedule, lr, epoch * steps_per_epoch + i, total) for i in range(steps_per_epoch)]


def _lr_plan(schedule: str, lr: float, n_train: int, batch_size: int, epochs: int) -> tuple:
    """``(rates, means)``: each epoch's step learning rates (None: constant, the optimizer's own ``lr``) and their
    mean (``history["lr"]`` and the checkpoints' ``"lr"``); shared by lone and ensembled training."""
    per_epoch = _steps_per_epoch(n_train, batch_size)
    rates = [_epoch_lrs(schedule, lr, e, per_epoch, epochs) for e in range(epochs)]
    return rates, [lr if r is None else math.fsum(r) / len(r) for r in rates]


def _fit(model, x_all, y_all, n_val, pretext, epochs, batch_size, lr, weight_decay, patience, min_steps, seed,
         checkpoints, device, display_progressbar, lr_schedule="constant", step=None):
    """Adam with early stopping: (history, checkpoint states, best state, best epoch). ``step``: None (the eager
    step, :class:`~lfeval.models.graphed.EagerStep`) or the step class of :mod:`lfeval.models.graphed` to take them.

    Draws come from a CPU generator (same seed, same draws on any device); the data, the epoch's order and the
    running loss live on ``device``, and the host reads the device once per epoch (train and validation loss
    together), never per batch."""
    gen = torch.Generator().manual_seed(seed)
    x_tr, y_tr, x_val, y_val = _split(x_all, y_all, n_val, gen, device)
    del x_all, y_all
    # the epoch's summed loss, in float64 as the Python float it replaces (MPS has no float64)
    acc = torch.float32 if device.type == "mps" else torch.float64

    opt = _adam(model.parameters(), lr, weight_decay, device, capturable=step is GraphedStep)
    stepper = (step or EagerStep)(lambda x, y, drawn: model.task.loss_given(model, x, y, drawn).mean(), opt,
                                  torch.zeros((), dtype=acc, device=device))
    best, best_state, best_epoch, wait = math.inf, None, 0, 0
    history = {"train_loss": [], "val_loss": []}
    if lr_schedule != "constant":
        history["lr"] = []
    schedule, epoch_lrs = _lr_plan(lr_schedule, lr, len(x_tr), batch_size, epochs)
    steps = 0
    states = []
    bar = tqdm(range(epochs), desc=f"train {pretext}", disable=not display_progressbar, leave=False)
    for epoch in bar:
        lrs, epoch_lr = schedule[epoch], epoch_lrs[epoch]
        total, epoch_steps = _epoch(model, stepper, x_tr, y_tr, batch_size, gen, lrs)
        steps += epoch_steps
        model.eval()
        with torch.no_grad():  # fixed corruption of the validation set: a comparable loss across epochs
            val = model.loss(x_val, y_val, generator=torch.Generator().manual_seed(seed + 1))
        total, val = torch.stack([total, val.to(acc)]).tolist()  # the epoch's one read of the device
        history["train_loss"].append(total / len(x_tr))
        history["val_loss"].append(val)
        if lrs is not None:
            history["lr"].append(epoch_lr)
        if checkpoints:
            states.append({"epoch": epoch, "lr": epoch_lr, "state_dict": copy.deepcopy(model.state_dict())})
        if not math.isfinite(val):
            raise InvalidInput(f"Training the {pretext} encoder diverged (validation loss {val}) at epoch {epoch}; "
                               "lower `lr` or check the data's scale.")
        bar.set_postfix(val=f"{val:.4f}")
        if val < best - 1e-7:
            best, best_state, best_epoch, wait = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            wait += 1
            if wait >= patience and steps >= min_steps:
                break
    bar.close()
    history["steps"] = steps  # optimizer steps taken (early stopping included), as the ensemble records them
    return history, states, best_state, best_epoch


def _spread(states: list, k: int) -> list:
    """``k`` states evenly spaced over training, the last one included."""
    if k <= 0 or not states:
        return []
    idx = sorted({round(i) for i in torch.linspace(0, len(states) - 1, steps=min(k, len(states)) + 1)[1:].tolist()})
    return [states[i] for i in idx]


def _finish(model: PretextModel, checkpoints: list, history: dict, config: dict, ds: Dataset) -> Encoder:
    model.eval()
    history = {**history, "diagnostics": diagnose(model, ds.x_train[:1024])}
    problem = history["diagnostics"]["problem"]
    if problem:
        warnings.warn(f"The {model.pretext} encoder on {ds.name} looks collapsed: {problem}. Its explanations "
                      "will say little; train longer (epochs, min_steps), with another lr, or check the data.",
                      stacklevel=4)  # past train_encoder and @precise
    return Encoder(model.encoder, modality=ds.modality, baseline=ds.baseline, input_shape=ds.input_shape,
                   pretext=model.pretext, pretext_model=model, loss=model.task.example_loss, checkpoints=checkpoints,
                   history=history, config=config, name=f"{ds.name}-{model.pretext}").eval()


def train_encoders(ds: Dataset, pretexts=PRETEXTS, **kwargs) -> dict:
    """Train one encoder per pretext task: ``{pretext: encoder}``."""
    return {p: train_encoder(ds, pretext=p, **kwargs) for p in pretexts}
