"""One command for a GPU machine (issue 26): is every lfeval path right on CUDA, and how fast is it?

Sections, in order of importance (each timed; the figures go to ``--json`` after every section, so a run cut
short keeps what it measured; a section that fails is a row with its error, not the end of the script):

  equality   every path of lfeval.diagnostics (each explainer, metric, adapter, example method, MetaQuantus
             test, lfeval.evaluate) on a digits encoder: CUDA vs CPU, largest difference relative to the
             largest value (tolerance 1e-4, TF32 off)
  cuda-tests the test suite's CUDA tests (pytest -k cuda)
  resnet     a torchvision ResNet-18 (random weights, 512-d) on 256 MNIST digits at 3x224x224: GradientShap
             against IntegratedGradients at the same number of model evaluations; Saliency, IG and
             RepresentationShift at each precision (highest / tf32 / bf16): seconds and error against highest
  run        `lfeval run --device cuda` on bench_scale.py's ResNet-18 config (N = 256), the same job with a
             near-free encoder (its host floor: what the GPU cannot remove), on the demo config, on a
             torchvision ViT-B/16 (random weights) at 224 (N = 64), and the demo with cuda_graph = true
  examples   the paper's §4.1 example consistency on all 60,000 MNIST training x 10,000 test digits: DkNN,
             SimplEx, TracIn and influence functions (d = 4 autoencoder trained here), seconds each
  training   the MNIST autoencoder, 20 epochs, by batch size (bench_training.py's GPU mode)
  step-floor (only when named in --sections) ms per training step at batch 256: eager, torch.compile and CUDA
             graphs, in float32 and bfloat16 (bench_training.py --step-floor; about 2 minutes of compiling)

``--budget`` bounds the whole command: a section starts only with 20 s of it left; inside a section, each
``lfeval run`` and the CUDA tests are cut off at it, and an example method that would start after it is
skipped (a row that says so).
Then it prints one Markdown table per section, the last one a summary. It also runs on the CPU
(``--device cpu --quick``: small sizes, for checking the script itself).

Run (fresh checkout, packages installed): python benchmarks/bench_gpu.py --json gpu.json [--budget 420]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tables import markdown  # noqa: E402

import lfeval  # noqa: E402
from lfeval import diagnostics  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

RESULTS: dict = {"sections": {}}
START = time.perf_counter()


def remaining(args) -> float:
    """Seconds of ``--budget`` left: sections start only within it; each ``lfeval run`` and the CUDA tests are
    cut off at it, and example methods are skipped after it."""
    return args.budget - (time.perf_counter() - START)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def subprocess_run(cmd, timeout: int, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` that returns on a timeout too: the child is killed, its output so far is kept and its
    return code reads ``"timed out after N s"``."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        text = [t.decode(errors="replace") if isinstance(t, bytes) else (t or "") for t in (exc.stdout, exc.stderr)]
        return subprocess.CompletedProcess(cmd, f"timed out after {timeout} s", *text)


def clock(fn, device):
    """``(fn(), seconds)`` with the device synchronised before the clock stops."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def section(name: str, args):
    """Decorator: run a section if time is left, store its figures (or its error) and write the JSON."""

    def wrap(fn):
        left = remaining(args)
        if left < 20:
            RESULTS["sections"][name] = {"skipped": f"{left:.0f} s of the budget left"}
            return
        print(f"\n## {name} ({left:.0f} s of the budget left)", flush=True)
        t0 = time.perf_counter()
        try:
            RESULTS["sections"][name] = fn(args)
        except Exception as exc:  # noqa: BLE001 - a failing section is a finding
            traceback.print_exc()
            RESULTS["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        RESULTS["sections"].setdefault(name, {})
        if isinstance(RESULTS["sections"][name], dict):
            RESULTS["sections"][name]["section_seconds"] = round(time.perf_counter() - t0, 2)
        if args.json:
            Path(args.json).write_text(json.dumps(RESULTS, indent=1, default=str))

    return wrap


def digits_encoder():
    ds = lfeval.data.load("digits", seed=0)
    enc = lfeval.models.train_encoder(ds, "reconstruction", latent_dim=8, seed=0, checkpoints=3, epochs=30,
                                      display_progressbar=False, device="cpu")
    return ds, enc


def random_vit(num_classes: int = 512):
    """torchvision's ViT-B/16 with random weights and a ``num_classes``-d output. torchvision initialises the
    classification head to zeros (a fine-tuning convention), which makes a random ViT's output, and every
    attribution, exactly zero: the head is drawn like the other linear layers instead."""
    import torchvision

    net = torchvision.models.vit_b_16(num_classes=num_classes)
    torch.nn.init.trunc_normal_(net.heads.head.weight, std=0.02)
    return net


def mnist224(n: int, n_train: int = 256):
    ds = lfeval.data.load("mnist", limit_train=n_train, limit_test=n)

    def big(x):
        return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)

    return big(ds.x_train), ds.y_train, big(ds.x_test), ds.y_test


# ------------------------------------------------------------------------------------------------ sections
def equality(args):
    ds, enc = digits_encoder()
    table = diagnostics.compare_placements(enc, ds, device=args.device)
    print(markdown(table[["relative_error", "ok", "seconds_reference", "seconds", "error"]], floatfmt=".2e"))
    return {"rows": table.reset_index().to_dict("records"), "ok": int(table["ok"].sum()), "paths": len(table)}


def cuda_tests(args):
    files = ["tests/test_devices.py", "tests/test_user_encoders.py", "tests/test_training_device.py",
             "tests/test_run_device.py", "tests/test_memory.py"] if args.tests is None else args.tests
    files = [f for f in files if (ROOT / f).exists()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "cuda", *files]
    limit = max(20, min(240, int(remaining(args))))
    out, seconds = clock(lambda: subprocess_run(cmd, limit, cwd=ROOT), "cpu")
    tail = (out.stdout + out.stderr)[-3000:]
    print(tail)
    return {"returncode": out.returncode, "seconds": round(seconds, 1), "tail": tail}


def resnet(args):
    import torchvision

    n = 4 if args.quick else 256
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=512).eval().to(args.device)
    _, _, x, _ = mnist224(n)
    x = x.to(args.device)
    enc = lfeval.as_encoder(net, x)
    rows, ref = [], {}
    explain = lfeval.explain
    for mode in ("highest", "tf32", "bf16"):
        with lfeval.precision.use(mode):
            for name, fn in {
                "Saliency": lambda: explain(enc, x, method="Saliency", batch_size=n),
                "IntegratedGradients (16 steps)": lambda: explain(enc, x, method="IntegratedGradients", n_steps=16,
                                                                  batch_size=n),
                "GradientShap (16 samples)": lambda: explain(enc, x, method="GradientShap", n_samples=16,
                                                             batch_size=n),
                "RepresentationShift": lambda: np.asarray(lfeval.metrics.RepresentationShift()(
                    enc, x.cpu().numpy(), a_batch=ref["Saliency"]), dtype=float),
            }.items():
                if name == "RepresentationShift" and "Saliency" not in ref:
                    continue
                fn()  # warm-up (cuDNN autotuning, allocator)
                value, seconds = clock(fn, args.device)
                if mode == "highest":
                    ref[name] = value
                err = float(np.abs(value - ref[name]).max() / max(np.abs(ref[name]).max(), 1e-30))
                rows.append({"precision": mode, "path": name, "seconds": round(seconds, 3), "relative_error": err})
    table = pd.DataFrame(rows)
    print(markdown(table, index=False))
    t = table[table.precision == "highest"].set_index("path")["seconds"]
    ratio = float(t["GradientShap (16 samples)"] / t["IntegratedGradients (16 steps)"])
    print(f"GradientShap / IG at 16 evaluations per input: {ratio:.2f}x (goal <= 2)")
    return {"n": n, "rows": rows, "gradientshap_over_ig": ratio}


def _lfeval_run(config: str, name: str, out: Path, device: str, timeout: int, profile: bool = False) -> dict:
    """``lfeval run`` in a fresh process: wall seconds, its stage lines and, with ``profile``, cProfile's top
    functions by cumulative time (where a run's time goes beyond the model)."""
    path = out / f"{name}.toml"
    path.write_text(config)
    prof = out / f"{name}.prof"
    cmd = [sys.executable, *(["-m", "cProfile", "-o", str(prof)] if profile else []), "-m", "lfeval.cli", "run",
           "--config", str(path), "--out", str(out), "--name", name]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc, seconds = clock(lambda: subprocess_run(cmd, timeout, env=env), "cpu")
    result = {"seconds": round(seconds, 1), "returncode": proc.returncode, "stderr": proc.stderr[-1500:],
              "stages": [line for line in proc.stdout.splitlines() if "done in" in line or "computed" in line]}
    if profile and prof.exists():
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(str(prof), stream=text).sort_stats("cumulative").print_stats(45)
        result["profile"] = text.getvalue()[-9000:]
    summary = out / name / "summary.csv"
    if summary.exists():
        result["summary"] = pd.read_csv(summary).head(20).to_dict("records")
    print(f"lfeval run {name}: {seconds:.1f} s, exit {proc.returncode}", flush=True)
    print("\n".join(result["stages"]))
    if proc.returncode:
        print(proc.stderr[-1500:])
    return result


def runs(args):
    from bench_scale import CONFIG, write_data

    out = Path(tempfile.mkdtemp())
    n = 32 if args.quick else 256
    write_data(out / "mnist224.npz", n)
    device_line = f'device = "{args.device}"\n'
    scale = CONFIG.format(data=(out / "mnist224.npz").as_posix(), n=n).replace("quiet = true\n",
                                                                              "quiet = false\n" + device_line)
    vit = scale.replace('factory = "torchvision.models:resnet18"', 'factory = "bench_gpu:random_vit"')
    vit = vit.replace(f"n_explain = {n}", f"n_explain = {min(n, 64)}")
    demo = f'[run]\n{device_line}quiet = false\ncache_dir = "{(out / "cache").as_posix()}"\n'
    if args.quick:
        demo += 'pretexts = ["reconstruction"]\nepochs = 2\nmeta_metrics = []\n'
    floor = scale.replace('"torchvision.models:resnet18"', '"bench_stock_metrics:near_free_encoder"')
    # the demo again with its encoders trained as replayed CUDA graphs, in a cache of its own (the weight cache's
    # key leaves cuda_graph out, so the demo's cache would hand it the eager encoders)
    demo_graph = demo.replace(f'"{(out / "cache").as_posix()}"', f'"{(out / "cache-graph").as_posix()}"') \
        + "cuda_graph = true\n"
    configs = {"resnet18": scale, "resnet18_floor": floor, "demo": demo, "vit_b_16": vit, "demo_graph": demo_graph}
    results = {}
    jobs = [(name, configs[name], name, False) for name in args.runs
            if name != "demo_graph" or torch.device(args.device).type == "cuda"]
    if args.profile:
        jobs.append(("resnet18-profiled", scale, "resnet18p", True))
    for key, config, name, profile in jobs:
        left = int(remaining(args))
        if left < 20:
            results[key] = {"skipped": f"{left} s of the budget left"}
            continue
        results[key] = _lfeval_run(config, name, out, args.device, min(300, left), profile=profile)
    return results


def examples(args):
    from lfeval.explain.examples import importance

    n_train, n_test = (2000, 500) if args.quick else (60000, 10000)
    ds = lfeval.data.load("mnist", limit_train=n_train, limit_test=n_test)
    enc, train_s = clock(lambda: lfeval.models.train_encoder(
        ds, "reconstruction", latent_dim=4, epochs=5, checkpoints=3, seed=0, device=args.device,
        display_progressbar=False), args.device)
    x_tr, x_te = ds.x_train.to(args.device), ds.x_test.to(args.device)
    rows = [{"method": "train (5 epochs, d = 4)", "seconds": round(train_s, 2)}]
    rates = {}
    for method in ("dknn", "simplex", "tracin", "influence"):
        if remaining(args) < 10:
            rows.append({"method": method, "error": f"skipped: {remaining(args):.0f} s of the budget left"})
            continue
        try:
            scores, seconds = clock(lambda: importance(enc, x_tr, x_te, method=method, display_progressbar=False),
                                    args.device)
            top = scores.topk(max(1, n_train // 20), dim=1).indices  # M = 5% of the training set
            same = (ds.y_train.to(top.device)[top] == ds.y_test.to(top.device)[:, None]).float().mean()
            rates[method] = float(same)
            rows.append({"method": method, "seconds": round(seconds, 2), "top5%_same_label": float(same)})
            del scores, top
        except Exception as exc:  # noqa: BLE001 - a method that cannot fit is reported with its size
            rows.append({"method": method, "error": f"{type(exc).__name__}: {exc}"[:300]})
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    print(markdown(table, index=False))
    total = float(table.loc[table.method != "train (5 epochs, d = 4)", "seconds"].sum())
    print(f"all four methods on {n_train} x {n_test}: {total:.1f} s (goal <= 60 s)")
    return {"n_train": n_train, "n_test": n_test, "rows": rows, "methods_seconds": total}


def training(args):
    import bench_training

    if not hasattr(bench_training, "gpu_sweep"):
        return {"skipped": "bench_training.gpu_sweep not available"}
    left = remaining(args)  # the sweep's own budget (120 s), within what is left
    return bench_training.gpu_sweep(device=args.device, limit=5000 if args.quick else None,
                                    budget=min(120.0, max(30.0, left)))


def step_floor(args):
    import bench_training

    return bench_training.step_floor(device=args.device, batches=(256,), steps=20 if args.quick else 60)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None)
    parser.add_argument("--budget", type=float, default=420, help="seconds; sections that would start later are "
                        "skipped, and the long jobs inside a section are cut off at it")
    parser.add_argument("--quick", action="store_true", help="small sizes (checking the script on a CPU)")
    parser.add_argument("--sections", nargs="*", default=None)
    parser.add_argument("--runs", nargs="*", default=["resnet18", "resnet18_floor", "demo", "vit_b_16", "demo_graph"],
                        help="jobs of the run section (demo_graph: the demo with cuda_graph = true, CUDA only)")
    parser.add_argument("--profile", action="store_true", help="run the ResNet-18 job again under cProfile")
    parser.add_argument("--tests", nargs="*", default=None, help="test files of the cuda-tests section")
    args = parser.parse_args()
    dev = torch.device(args.device)
    RESULTS["environment"] = {"torch": torch.__version__, "device": str(dev),
                              "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                              "cpus": os.cpu_count()}
    print(RESULTS["environment"], flush=True)
    chosen = {"equality": equality, "cuda-tests": cuda_tests, "resnet": resnet, "examples": examples,
              "run": runs, "training": training, "step-floor": step_floor}
    for name, fn in chosen.items():
        if (name in args.sections) if args.sections is not None else name != "step-floor":
            section(name, args)(fn)
    print("\n## summary")
    summary = []
    for name, res in RESULTS["sections"].items():
        detail = ""
        if "error" in res:
            detail = res["error"][:120]
        elif name == "equality":
            detail = f"{res['ok']} of {res['paths']} paths within 1e-4"
        elif name == "cuda-tests":
            detail = f"exit {res['returncode']}: {res['tail'].strip().splitlines()[-1] if res['tail'].strip() else ''}"
        elif name == "resnet":
            detail = f"GradientShap/IG {res['gradientshap_over_ig']:.2f}x"
        elif name == "examples":
            detail = f"{res['methods_seconds']:.1f} s on {res['n_train']} x {res['n_test']}"
        elif name == "step-floor":
            detail = ", ".join(f"{r['precision']} {r['mode']} {r['ms_per_step']:.2f} ms/step" for r in res["rows"]
                               if "ms_per_step" in r)
        elif name == "run":
            detail = ", ".join(f"{k} {v['seconds']} s (exit {v['returncode']})" if "seconds" in v else
                               f"{k} {v.get('skipped', '')}" for k, v in res.items() if isinstance(v, dict))
        summary.append({"section": name, "seconds": res.get("section_seconds"), "result": detail or
                        res.get("skipped", "")})
    print(markdown(pd.DataFrame(summary), index=False))
    RESULTS["total_seconds"] = round(time.perf_counter() - START, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
