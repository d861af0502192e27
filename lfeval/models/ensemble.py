"""Train many encoders together: batched ensembles, one optimizer step for all the members of a group.

The paper's §4.2 and §4.3 train many small encoders of one architecture (4 tasks x 5 seeds, 2 VAEs x 3 β x
seeds). Trained one after the other, each pays the per-step floor of kernel launches and Python (about 3 ms on
a GPU for the MNIST autoencoder). :func:`train_ensemble` stacks the weights of the members whose tasks share their
loss code (:meth:`~lfeval.models.PretextTask.batch_key`: reconstruction, denoising and inpainting; a VAE kind
over β; any task over seeds) and runs one ``torch.func.vmap``-ed loss over them. S members then pay one step's
floor (on an H200, 15 members at batch 300: 3.4 ms a member against 5.7 alone, benchmarks/README.md). Adam is
elementwise, so one Adam over the stacked weights is S independent Adams.

What equals a lone :func:`~lfeval.models.train_encoder` run with the same pretext, options and seed, member by
member: the initial weights, the validation split, the order of the batches, every random draw (each member has
its own seeded CPU generator, consumed in the lone run's order; on a GPU threads make them one epoch ahead),
early stopping (a member's best weights, best epoch, history and checkpoints stop where its lone run would
stop; its later steps are discarded) and the settings. What differs: a batched convolution or matrix product
sums in another order than the lone one, so the weights agree to float32 rounding after a few steps and then
drift apart as two trainings on different hardware do; the trained encoders are equivalent, not bit-identical
(``tests/test_ensemble.py`` bounds both). Members are cached apart from lone runs
(``config["trainer"] = "ensemble"``), and with ``cache_dir`` a group's progress is saved as it trains, so a
killed run resumes from its last saved epoch with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import math
import queue
import shutil
import threading
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import threads as threads_mod
from ..data.base import Dataset
from ..errors import InvalidArgument, InvalidInput
from ..files import replace_with
from ..precision import precise
from ..validation import check_device, check_positive_int
from .graphed import EagerStep, GraphedStep
from .pretext import PretextModel
from .training import (
    _adam,
    _cache_file,
    _config,
    _finish,
    _load_cached,
    _lr_plan,
    _new_model,
    _plan,
    _set_lr,
    _spread,
    _step_kind,
    _steps_per_epoch,
    _store,
)


class _BatchLoss(nn.Module):
    """The mean training loss of one member as a module call, for ``torch.func.functional_call``."""

    def __init__(self, model: PretextModel):
        super().__init__()
        self.model = model

    def forward(self, x, y, drawn):
        return self.model.task.loss_given(self.model, x, y, drawn).mean()


@precise
def train_ensemble(
    ds: Dataset,
    members,
    latent_dim: int = 8,
    epochs: int = 100,
    batch_size: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    patience: int = 10,
    min_steps: int = 500,
    cache_dir=None,
    checkpoints: int = 0,
    val_fraction: float = 0.1,
    device=None,
    display_progressbar: bool = True,
    threads="auto",
    lr_schedule: str = "constant",
    cuda_graph: bool = False,
) -> list:
    """Train several encoders at once, as batched ensembles: ``[Encoder, ...]`` in the order of ``members``.

    Parameters
    ----------
    members : list of dict
        One dict per encoder: ``{"pretext": ..., "seed": ...}`` plus that task's options (``sigma``, ``p``,
        ``beta``, ...). Members whose tasks share their loss code and architecture train in one vmapped step:
        reconstruction, denoising and inpainting together, a VAE kind over several β, any task over seeds.
    latent_dim, epochs, batch_size, lr, weight_decay, patience, min_steps, lr_schedule :
        The training settings of :func:`~lfeval.models.train_encoder`.
    cache_dir, checkpoints, val_fraction, device, display_progressbar, threads :
        :func:`~lfeval.models.train_encoder`'s, shared by the members. Each member is what a lone run with its
        pretext, seed and options computes, up to float rounding (module docstring). Members found in
        ``cache_dir`` are loaded; the others are trained. Under ``lfeval.precision.use("bf16")`` each step runs
        under bfloat16 autocast, as a lone run's; inside ``vmap`` torch computes the convolutions' and linear
        layers' products in bfloat16 but adds their biases in float32 (pytorch/pytorch#192617), so a member's
        bfloat16 weights are not a lone bfloat16 run's to float rounding.
    cuda_graph : bool
        On CUDA only: each group's full-batch step (the vmapped loss, backward, Adam) is recorded once as a CUDA
        graph and replayed (:mod:`lfeval.models.graphed`), as :func:`~lfeval.models.train_encoder`'s option; the
        draws and batches are the eager step's, so the members are the same within float32 rounding. A group's
        saved progress is kept apart for each setting.

    Examples
    --------
    >>> import lfeval
    >>> ds = lfeval.data.load("breast_cancer")
    >>> members = [{"pretext": "denoising", "seed": s} for s in (0, 1)] + [{"pretext": "reconstruction", "seed": 0}]
    >>> encs = lfeval.models.train_ensemble(ds, members, latent_dim=3, epochs=2, display_progressbar=False)
    >>> [(e.pretext, e.config["seed"]) for e in encs], encs[0].config["trainer"], tuple(encs[1](ds.x_test[:4]).shape)
    ([('denoising', 0), ('denoising', 1), ('reconstruction', 0)], 'ensemble', (4, 3))
    """
    members = _check_members(members)
    step = _step_kind(cuda_graph, check_device(device))
    out, groups = [None] * len(members), {}
    for i, member in enumerate(members):
        options = {k: v for k, v in member.items() if k not in ("pretext", "seed")}
        plan = _plan(ds, member["pretext"], latent_dim, epochs, batch_size, lr, weight_decay, patience, min_steps,
                     checkpoints, val_fraction, device, threads, options, lr_schedule)
        config = _config(ds, plan, member["seed"], trainer="ensemble")
        model = _new_model(ds, plan, member["seed"])
        cache_file = _cache_file(cache_dir, ds, plan, member["seed"], config)
        saved = _load_cached(cache_file, model, plan)
        if saved is not None:
            out[i] = _finish(model, saved["checkpoints"], saved["history"], config, ds)
            continue
        shapes = tuple((k, tuple(v.shape)) for k, v in model.named_parameters())
        groups.setdefault((model.task.batch_key(), shapes), []).append((i, member["seed"], model, config, cache_file,
                                                                       plan))
    for group in groups.values():
        plan, models = group[0][-1], [m for _, _, m, *_ in group]
        progress = None
        if cache_dir is not None:  # the group's training so far, named by its members' cache files
            names = [str(g[4].name) for g in group] + (["cuda-graph"] if cuda_graph else [])  # its own optimizer
            key = hashlib.sha256("|".join(names).encode()).hexdigest()[:20]
            progress = Path(cache_dir) / f"ensemble-{key}.progress"
        work = threads_mod.work_of(models[0], ds.input_shape, batch=plan["batch_size"] * len(models))
        with threads_mod.limit(plan["threads"], work=work, adapt_to_load=False):
            fitted = _fit_ensemble(models, [s for _, s, *_ in group], plan, ds.y_train, display_progressbar,
                                   progress, step)
        for (i, _, model, config, cache_file, _), (best_state, history, states) in zip(group, fitted):
            model.load_state_dict(best_state)
            kept = _spread(states[: history["best_epoch"] + 1], plan["checkpoints"])
            _store(cache_file, cache_dir, model, kept, history, config)
            out[i] = _finish(model, kept, history, config, ds)
        if progress is not None:
            shutil.rmtree(progress, ignore_errors=True)
    return out


def _check_members(members) -> list:
    if isinstance(members, (dict, str)) or not isinstance(members, (list, tuple)) or not members:
        raise InvalidArgument("`members` must be a non-empty list of dicts such as {'pretext': 'denoising', "
                              f"'seed': 0}} (plus task options), got {members!r}.")
    checked, seen = [], set()
    for m in members:
        if not isinstance(m, dict) or not {"pretext", "seed"} <= set(m):
            raise InvalidArgument(f"Each of `members` must be a dict with 'pretext' and 'seed' (plus task options), "
                                  f"got {m!r}.")
        m = {**m, "seed": check_positive_int(m["seed"], "members' seed", minimum=0)}
        key = tuple(sorted((k, repr(v)) for k, v in m.items()))
        if key in seen:
            raise InvalidArgument(f"`members` lists {m!r} twice: the same encoder would be trained twice.")
        seen.add(key)
        checked.append(m)
    return checked


class _EpochStream:
    """One member's epochs: its batch order (rows of the data) and its draws for every step, from its own
    generator in the lone run's order. On a GPU a thread makes them one epoch ahead: the CPU draws (about 1 ms
    per MNIST batch and member) then overlap the device's steps instead of adding to them."""

    def __init__(self, model, template, generator, train_idx, x_all, batch_size, epochs, threaded):
        self.task, self.template, self.gen = model.task, template, generator
        self.train_idx, self.x_all, self.bs, self.epochs = train_idx, x_all, batch_size, epochs
        self.queue, self.stop, self.thread = queue.Queue(maxsize=1), threading.Event(), None
        if threaded:
            self.thread = threading.Thread(target=self._produce, daemon=True)
            self.thread.start()

    def _epoch(self):
        order = torch.randperm(len(self.train_idx), generator=self.gen).to(self.train_idx.device, non_blocking=True)
        rows, drawn = self.train_idx[order], []
        for start in range(0, len(rows), self.bs):
            batch = rows[start:start + self.bs]
            if len(batch) < 2 <= self.bs:  # a single leftover sample: skipped, as in a lone run
                break
            drawn.append(self.task.draws(self.template, self.x_all[batch], self.gen))
        return rows, drawn, self.gen.get_state()  # the generator where the next epoch starts (for a resume)

    def _produce(self):
        for _ in range(self.epochs):
            try:
                item = self._epoch()
            except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which raises it
                item = exc
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self.stop.is_set() or isinstance(item, BaseException):
                return

    def next(self):
        """(rows (n_train,), [draws of each step], generator state after them) of the next epoch."""
        if self.thread is None:
            return self._epoch()
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self.stop.set()


def _stack(drawn: list):
    """The members' draws of one step, stacked on a new dim 0 (None, a tensor or a tuple of tensors)."""
    if drawn[0] is None:
        return None
    if isinstance(drawn[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*drawn))
    return torch.stack(drawn)


#: make the members' draws on threads, one epoch ahead: None = on a GPU (the tests set True to check it on the CPU)
THREADED = None


#: seconds between two saves of an ensemble's progress (``cache_dir``): a killed run loses at most this much
SAVE_EVERY = 60.0


def _fit_ensemble(models: list, seeds: list, plan: dict, y_all, display_progressbar: bool, progress=None,
                  step_kind=None) -> list:
    """Adam on the stacked members (one architecture, tasks of one :meth:`~lfeval.models.PretextTask.batch_key`)
    with per-member early stopping: ``[(best state, history, states), ...]``. ``progress`` (a folder) holds the
    training so far, saved at the end of an epoch every :data:`SAVE_EVERY` seconds (weights, Adam's state, each
    member's generator, early stopping's counters; the checkpoint states one file per epoch); a run started
    again resumes from it and computes what the uninterrupted run would have. ``step_kind``: None (the eager step,
    :class:`~lfeval.models.graphed.EagerStep`) or the step class of :mod:`lfeval.models.graphed` to take them."""
    device, bs, n_val = plan["device"], plan["batch_size"], plan["n_val"]
    x_all = plan["x"].to(device)
    y_all = (torch.zeros(len(x_all), dtype=torch.long) if y_all is None else y_all).to(device)
    size = len(models)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    perms = [torch.randperm(len(x_all), generator=g) for g in gens]  # the lone run's first draw: the split
    val_idx = torch.stack([p[:n_val] for p in perms]).to(device)
    train_idx = torch.stack([p[n_val:] for p in perms]).to(device)
    n_tr = train_idx.shape[1]

    template = copy.deepcopy(models[0])
    loss_module = _BatchLoss(template)
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]).requires_grad_()
              for k, _ in template.named_parameters()}
    buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in models]) for k, _ in template.named_buffers()}

    def member(p, b, x, y, drawn):
        state = {**{f"model.{k}": v for k, v in p.items()}, **{f"model.{k}": v for k, v in b.items()}}
        return torch.func.functional_call(loss_module, state, (x, y, drawn))

    def losses(x, y, drawn):  # (S,) mean losses; x, y, drawn carry the members on dim 0
        dims = (0, 0, 0, 0, None if drawn is None else 0)
        return torch.func.vmap(member, in_dims=dims, randomness="error")(params, buffers, x, y, drawn)

    opt = _adam(list(params.values()), plan["lr"], plan["weight_decay"], device, capturable=step_kind is GraphedStep)
    acc = torch.float32 if device.type == "mps" else torch.float64
    stepper = (step_kind or EagerStep)(losses, opt, torch.zeros(size, dtype=acc, device=device), batch_dim=1)
    x_val, y_val = x_all[val_idx], y_all[val_idx]
    best = {k: v.detach().clone() for k, v in params.items()}
    best_loss, best_epoch, wait = [math.inf] * size, [0] * size, [0] * size
    active = [True] * size
    histories = [{"train_loss": [], "val_loss": [], **({"lr": []} if plan["lr_schedule"] != "constant" else {})}
                 for _ in range(size)]
    # each epoch's learning rates (None: constant, the optimizer's own) and their mean (the checkpoints' "lr")
    schedule, epoch_lr = _lr_plan(plan["lr_schedule"], plan["lr"], n_tr, bs, plan["epochs"])
    states, steps = [], 0
    names = sorted({m.pretext for m in models})
    bar = tqdm(total=plan["epochs"], desc=f"train {size} x {'/'.join(names)}", disable=not display_progressbar,
               leave=False)
    first = 0
    if progress is not None and (Path(progress) / "state.pt").exists():
        first, steps = _resume(Path(progress), params, opt, best, best_loss, best_epoch, wait, active, histories,
                               states, gens, device)
    threaded = device.type == "cuda" if THREADED is None else THREADED
    streams = [_EpochStream(m, template, g, train_idx[i], x_all, bs, plan["epochs"] - first, threaded)
               for i, (m, g) in enumerate(zip(models, gens))]
    val_drawn = _stack([m.task.draws(template, x_val[i], torch.Generator().manual_seed(s + 1))  # fixed, as lone
                        for i, (m, s) in enumerate(zip(models, seeds))])
    saved_at = time.monotonic()
    bar.update(first)
    try:
        for epoch in range(first, plan["epochs"]):
            template.train()
            lrs = schedule[epoch]
            epochs = [stream.next() for stream in streams]
            rows = torch.stack([r for r, *_ in epochs])  # (S, n_train): each member's order, as indices into the data
            total = stepper.reset()
            for step, start in enumerate(range(0, len(epochs[0][1]) * bs, bs)):
                idx = rows[:, start:start + bs]
                if lrs is not None:  # read by the optimizer's step only
                    _set_lr(opt, lrs[step])
                steps += 1
                stepper.step(x_all[idx], y_all[idx], _stack([d[step] for _, d, _ in epochs]))
            template.eval()
            with torch.no_grad():
                val = losses(x_val, y_val, val_drawn)
            read = torch.cat([total, val.to(acc)]).tolist()  # the epoch's one read of the device
            improved = [False] * size
            for i in range(size):
                if not active[i]:
                    continue
                histories[i]["train_loss"].append(read[i] / n_tr)
                histories[i]["val_loss"].append(read[size + i])
                if lrs is not None:
                    histories[i]["lr"].append(epoch_lr[epoch])
                if not math.isfinite(read[size + i]):
                    raise InvalidInput(f"Training the {models[i].pretext} encoder with seed {seeds[i]} diverged "
                                       f"(validation loss {read[size + i]}) at epoch {epoch}; lower `lr` or check the "
                                       "data's scale.")
                if read[size + i] < best_loss[i] - 1e-7:
                    best_loss[i], best_epoch[i], wait[i], improved[i] = read[size + i], epoch, 0, True
                else:
                    wait[i] += 1
                    if wait[i] >= plan["patience"] and steps >= plan["min_steps"]:
                        active[i] = False
            if any(improved):
                mask = torch.tensor(improved, device=device)
                for k, v in params.items():
                    best[k] = torch.where(mask.view(-1, *[1] * (v.dim() - 1)), v.detach(), best[k])
            if plan["checkpoints"]:
                states.append({k: v.detach().clone() for k, v in params.items()})
            bar.set_postfix(active=sum(active), val=f"{min(best_loss):.4f}")
            bar.update()
            if not any(active):
                break
            if progress is not None and time.monotonic() - saved_at >= SAVE_EVERY:
                _save(Path(progress), epoch, steps, params, opt, best, best_loss, best_epoch, wait, active, histories,
                      states, [g for *_, g in epochs])
                saved_at = time.monotonic()
    finally:
        for stream in streams:
            stream.close()
    bar.close()
    fitted = []
    for i in range(size):
        histories[i]["best_epoch"] = best_epoch[i]
        histories[i]["steps"] = len(histories[i]["val_loss"]) * _steps_per_epoch(n_tr, bs)  # as the lone run's
        member_states = [{"epoch": e, "lr": epoch_lr[e], "state_dict": {**{k: v[i].clone() for k, v in st.items()},
                                                                         **{k: v[i] for k, v in buffers.items()}}}
                         for e, st in enumerate(states[: len(histories[i]["val_loss"])])]
        fitted.append(({**{k: v[i].clone() for k, v in best.items()}, **{k: v[i] for k, v in buffers.items()}},
                       histories[i], member_states))
    return fitted


def _save(folder: Path, epoch, steps, params, opt, best, best_loss, best_epoch, wait, active, histories, states,
          generators) -> None:
    """The training after ``epoch``, written atomically; checkpoint states not yet on disk, one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    for e, state in enumerate(states):
        path = folder / f"states-{e}.pt"
        if not path.exists():
            cpu = {k: v.cpu() for k, v in state.items()}
            replace_with(path, lambda tmp: torch.save(cpu, tmp))
    progress = {"epoch": epoch, "steps": steps, "params": {k: v.detach().cpu() for k, v in params.items()},
                "opt": opt.state_dict(), "best": {k: v.cpu() for k, v in best.items()}, "best_loss": best_loss,
                "best_epoch": best_epoch, "wait": wait, "active": active, "histories": histories,
                "states": len(states), "generators": generators}
    replace_with(folder / "state.pt", lambda tmp: torch.save(progress, tmp))


def _resume(folder: Path, params, opt, best, best_loss, best_epoch, wait, active, histories, states, gens, device):
    """Load :func:`_save`'s progress into the training's objects (in place): (first epoch to run, steps done)."""
    saved = torch.load(folder / "state.pt", map_location=device, weights_only=True)
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(saved["params"][k])
            best[k] = saved["best"][k].to(device)
    opt.load_state_dict(saved["opt"])
    for target, value in ((best_loss, "best_loss"), (best_epoch, "best_epoch"), (wait, "wait"), (active, "active"),
                          (histories, "histories")):
        target[:] = saved[value]
    states[:] = [{k: v.to(device) for k, v in torch.load(folder / f"states-{e}.pt", map_location=device,
                                                           weights_only=True).items()}
                 for e in range(saved["states"])]
    for g, state in zip(gens, saved["generators"]):
        g.set_state(state.cpu())
    return saved["epoch"] + 1, saved["steps"]


__all__ = ["train_ensemble"]
