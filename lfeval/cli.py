"""Command line: ``lfeval run``, the main job (see :mod:`lfeval.pipeline` and :class:`lfeval.config.RunConfig`),
and ``lfeval report RUN_DIR``, which draws a finished run's report again without recomputing.

Flags are config overrides: ``--device``, ``--threads`` and the others go through :class:`lfeval.config.RunConfig`
like the keys of a config file, so each setting is resolved in one place."""

from __future__ import annotations

import argparse
import math
import sys

from .config import TRAINING_DEFAULTS, RunConfig
from .errors import LfevalError
from .pipeline import job
from .precision import PRECISIONS


def _run(args) -> int:
    overrides = {k: v for k, v in {
        "name": args.name, "data": args.data, "data_root": args.root, "seed": args.seed,
        "latent_dim": args.latent_dim, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "lr_schedule": args.lr_schedule, "out_dir": args.out,
        "pretexts": args.pretexts, "explainers": args.explainers, "metrics": args.metrics,
        "example_methods": args.example_methods, "n_explain": args.n_explain,
        "meta_metrics": args.meta_metrics, "meta_iterations": args.meta_iterations, "threads": args.threads,
        "quiet": True if args.quiet else None, "backend": args.backend, "address": args.address,
        "device": args.device, "precision": args.precision, "pairs": args.pairs,
        "cuda_graph": True if args.cuda_graph else None,
    }.items() if v is not None}
    config = RunConfig.from_toml(args.config, **overrides) if args.config else RunConfig.from_dict(overrides)
    waiting = {} if args.wait is None else {"wait": args.wait}  # default: a folder in use is an error at once
    report = job.run(config, fresh=args.fresh, log=(lambda *a: None) if config.quiet else print, **waiting)
    print(report)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--wait takes a number of seconds >= 0, got {text!r}")
    return value


def _fail(message: str, code: int = 2) -> int:
    print(f"lfeval: error: {message}", file=sys.stderr)
    return code


def _report(args) -> int:
    print(job.report(args.run_dir))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lfeval", description="Label-free explainability, evaluated.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train encoders, explain, score, meta-evaluate, write a report")
    p.add_argument("--config", help="TOML file with run settings (see lfeval.config.RunConfig)")
    p.add_argument("--name", help="run name: results go to <out>/<name>/")
    p.add_argument("--out", help="output folder (default: runs)")
    p.add_argument("--data", help="data set, e.g. digits, mnist, medmnist:dermamnist, ecg5000")
    p.add_argument("--root", help="folder holding the files of on-disk data sets")
    p.add_argument("--seed", type=int)
    p.add_argument("--latent-dim", type=int, dest="latent_dim")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="pretext training's batch size (default: 64, "
                   "smaller on small data sets)")
    p.add_argument("--lr", type=float, help="pretext training's Adam learning rate (default "
                   f"{TRAINING_DEFAULTS['lr']:g})")
    p.add_argument("--lr-schedule", dest="lr_schedule", help="constant (default) or cosine: warm-up and cosine "
                   "decay, for large batches")
    p.add_argument("--pretexts", nargs="+")
    p.add_argument("--explainers", nargs="+")
    p.add_argument("--metrics", nargs="+")
    p.add_argument("--example-methods", nargs="*", dest="example_methods")
    p.add_argument("--n-explain", type=int, dest="n_explain", help="test inputs explained and scored")
    p.add_argument("--meta-metrics", nargs="*", dest="meta_metrics", help="metrics to meta-evaluate (none: skip)")
    p.add_argument("--meta-iterations", type=int, dest="meta_iterations")
    p.add_argument("--backend", help="serial (default) or ray: run the per-encoder and per-metric stages as Ray tasks "
                   "(pip install 'lfeval[ray]')")
    p.add_argument("--address", help="with --backend ray: join the Ray cluster at this address (default: start a "
                   "local Ray on this machine)")
    p.add_argument("--device", help="where every stage computes: cpu (default), cuda, cuda:1, mps")
    p.add_argument("--cuda-graph", action="store_true", dest="cuda_graph", help="train the pretext encoders with "
                   "each full batch's step replayed as a CUDA graph (a CUDA --device only)")
    p.add_argument("--precision", help=f"arithmetic on a GPU: {', '.join(PRECISIONS)} (default highest: equals the "
                   "CPU within 1e-4; tf32 and bf16 are faster, less exact)")
    p.add_argument("--threads", help="torch intra-op threads: 'auto' (default; from the work, the free cores "
                   "and LFEVAL_THREADS) or a number")
    p.add_argument("--pairs", help="pair explanations (why are a and b close?): 'nearest' (each explained input "
                   "with its nearest training example in latent space) or a file of index pairs into the test split "
                   "(.csv with columns a,b, or .npy of shape (P, 2)); default: none")
    p.add_argument("--fresh", action="store_true", help="discard stored stages and start again")
    p.add_argument("--wait", nargs="?", type=_seconds, const=math.inf, metavar="SECONDS",
                   help="if another process is writing the run folder, wait for it (up to SECONDS; none: as long "
                   "as it takes) instead of stopping with an error")
    p.add_argument("--quiet", action="store_true", help="no progress bars or logs")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an unexpected error")
    p.set_defaults(func=_run)
    p = sub.add_parser("report", help="redraw report.html and the plots of a finished run (recomputes nothing)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. runs/default")
    p.set_defaults(func=_report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LfevalError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted; the finished stages are stored, rerun the same command to resume.", 130)
    except OSError as exc:  # disk full, permissions, a folder removed under the run
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''} ({type(exc).__name__}). Check the folder and "
                     "rerun; finished stages are kept.")
    except Exception as exc:  # a bug: one line, the traceback only on request
        if getattr(args, "traceback", False):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc}. This is a bug in lfeval or a plugin; rerun with "
                     "--traceback for the details and report it.")


if __name__ == "__main__":
    sys.exit(main())
