"""Training many small encoders on one device: milliseconds per optimizer step of S members, lone or ensembled.

On MNIST (or ``--data``) with the paper's batch 300, the reconstruction/denoising/inpainting autoencoder:
  lone      S lone train steps one after the other (what train_encoder pays per member and step)
  vmap      one lfeval.models.train_ensemble step of S members (torch.func.vmap over stacked weights)
and each of them also replayed as a CUDA graph (``cuda_graph=True``: lfeval.models.graphed.GraphedStep,
which removes the per-step launches and Python, so what is left is each layout's arithmetic; off CUDA its
buffers with an eager step, StaticStep, a check of this script), each with cuDNN's
heuristic algorithm choice and with ``torch.backends.cudnn.benchmark`` (a timed search per
shape), then in each further precision of ``--precisions`` (``lfeval.precision.use``: TF32, or each step's
forward pass and loss under bfloat16 autocast, as ``train_encoder``/``train_ensemble`` run them), and a profile
of the vmap step's top CUDA kernels. Prints ms per step of all S members and the ratios.

Run: python benchmarks/bench_ensemble.py --device cuda [--members 1,5,15] [--steps 20] [--precisions highest,bf16]
     [--json ensemble.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import lfeval  # noqa: E402
from lfeval.models import ensemble  # noqa: E402
from lfeval.models.graphed import EagerStep, GraphedStep, StaticStep  # noqa: E402
from lfeval.models.training import _adam, _new_model, _plan  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def lone_steps(ds, plan, size, device, steps, graph=False):
    models = [_new_model(ds, plan, s) for s in range(size)]
    opts = [_adam(m.parameters(), 1e-3, 1e-5, device, capturable=graph) for m in models]
    x = ds.x_train[: plan["batch_size"]].to(device)
    y = ds.y_train[: plan["batch_size"]].to(device)
    gens = [torch.Generator().manual_seed(s) for s in range(size)]
    steppers = [_step_class(device, graph)(lambda x, y, d, m=m: m.task.loss_given(m, x, y, d).mean(), o,
                                           torch.zeros((), dtype=torch.float64, device=device))
                for m, o in zip(models, opts)]

    def step():  # train_encoder's step (cuda_graph=graph)
        for m, g, s in zip(models, gens, steppers):
            with lfeval.precision.autocast(device):
                drawn = m.task.draws(m, x, g)
            s.step(x, y, drawn)
    return _time(step, device, steps, warm=GraphedStep.WARMUP + 1 if graph else 3)


def vmap_steps(ds, plan, size, device, steps, profile=False, graph=False):
    models = [_new_model(ds, plan, s) for s in range(size)]
    template = models[0]
    loss_module = ensemble._BatchLoss(template)
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]).requires_grad_()
              for k, _ in template.named_parameters()}
    opt = _adam(list(params.values()), 1e-3, 1e-5, device, capturable=graph)
    x = ds.x_train[: plan["batch_size"]].to(device).expand(size, *[-1] * ds.x_train.dim()).contiguous()
    y = ds.y_train[: plan["batch_size"]].to(device).expand(size, -1).contiguous()
    gens = [torch.Generator().manual_seed(s) for s in range(size)]

    def member(p, x, y, drawn):
        return torch.func.functional_call(loss_module, {f"model.{k}": v for k, v in p.items()}, (x, y, drawn))

    def losses(x, y, drawn):
        return torch.func.vmap(member, in_dims=(0, 0, 0, None if drawn is None else 0))(params, x, y, drawn)

    stepper = _step_class(device, graph)(losses, opt, torch.zeros(size, dtype=torch.float64, device=device),
                                         batch_dim=1)

    def step():  # train_ensemble's step (cuda_graph=graph)
        stepper.step(x, y, ensemble._stack([m.task.draws(template, x[i], g)
                                            for i, (m, g) in enumerate(zip(models, gens))]))
    ms = _time(step, device, steps, warm=GraphedStep.WARMUP + 1 if graph else 3)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                step()
            _sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(p.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=60))
    return ms


def _step_class(device, graph: bool):
    """train_encoder/train_ensemble's step: eager, or with ``graph`` (cuda_graph=True) replayed on CUDA and
    elsewhere its buffers with an eager step (StaticStep), so that the script's graph rows run, and are checked, on
    a CPU."""
    if not graph:
        return EagerStep
    return GraphedStep if device.type == "cuda" else StaticStep


def _time(step, device, steps, warm=3):
    for _ in range(warm):  # warm-up: kernels, allocator, a graph's eager steps and capture
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps * 1e3


def main(argv=None) -> list:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--members", default="1,5,15")
    parser.add_argument("--pretext", default="denoising")
    parser.add_argument("--batch-size", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precisions", default="highest,tf32,bf16", help="comma-separated lfeval.precision modes; "
                        "those after the first run with cudnn.benchmark off only")
    parser.add_argument("--json", default=None, help="write the rows there (after each one)")
    parser.add_argument("--no-profile", action="store_true", help="skip the closing profile of the vmap step")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    ds = lfeval.data.load(args.data)
    plan = _plan(ds, args.pretext, 4, 1, args.batch_size, 1e-3, 1e-5, 1, 0, 0, 0.1, device, "auto", {})
    print(f"{ds.name} {args.pretext}, batch {args.batch_size}, {device}: ms per step of all S members")
    modes = args.precisions.split(",")
    runs = [(modes[0], bench) for bench in ((False, True) if device.type == "cuda" else (False,))]
    runs += [(mode, False) for mode in modes[1:]]
    rows, graphs = [], (False, True)
    for mode, bench in runs:
        torch.backends.cudnn.benchmark = bench
        with lfeval.precision.use(mode):
            for size in [int(s) for s in args.members.split(",")]:
                for graph in graphs:
                    row = {"precision": mode, "cudnn_benchmark": bench, "members": size,
                           "step": "graph" if graph else "eager"}
                    rows.append(row)
                    try:
                        row["lone_ms"] = lone = lone_steps(ds, plan, size, device, args.steps, graph=graph)
                        row["vmap_ms"] = vm = vmap_steps(ds, plan, size, device, args.steps, graph=graph)
                    except Exception as exc:  # noqa: BLE001 - a step that fails is a finding, not the end
                        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                        print(f"{mode:7s} cudnn.benchmark={bench} S={size:3d} {row['step']:5s}: {row['error']}")
                    else:
                        print(f"{mode:7s} cudnn.benchmark={bench} S={size:3d} {row['step']:5s}: lone x S "
                              f"{lone:8.1f} ms  vmap {vm:8.1f} ms  (vmap / lone {vm / lone:.2f}; per member: lone "
                              f"{lone / size:.2f}, vmap {vm / size:.2f})", flush=True)
                    if args.json:
                        Path(args.json).write_text(json.dumps({"device": str(device), "data": ds.name,
                                                               "batch": args.batch_size, "rows": rows}, indent=1))
    torch.backends.cudnn.benchmark = False
    if not args.no_profile:
        vmap_steps(ds, plan, int(args.members.split(",")[-1]), device, 3, profile=True)
    return rows


if __name__ == "__main__":
    main()
