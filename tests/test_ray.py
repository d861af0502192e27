"""``backend="ray"`` on a real local Ray head (127.0.0.1, 2 CPUs) started by this module and stopped after it.

A benchmark grid and an ``lfeval run`` equal their serial runs exactly, stage file by stage file; a worker
killed mid-task is retried and the grid completes with every cell once; a cell that fails on every try is
reported by name while the other cells are kept; a driver killed mid-grid resumes computing only the
unfinished stages, on Ray or serially, and a serial run finishes on Ray. Without Ray installed,
``backend="ray"`` names the extra to install.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import quantus

# before Ray is imported: no usage statistics, every address on the loopback interface (single-machine mode), and
# Ray's notes on retried tasks printed as they come (not batched for later), so that pytest captures them, with
# the builtin print (Ray would swap in its own, and a doctest pickles print)
os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from lfeval.cli import main  # noqa: E402
from lfeval.errors import CellsFailed, ExtraMissing  # noqa: E402
from lfeval.meta import benchmark  # noqa: E402
from lfeval.metrics import LabelFree, RepresentationShift  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (TimeoutError) instead of hanging if the block takes longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"a Ray step took over {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _descendants(root: int) -> dict:
    """``{pid: command line}`` of the processes below ``root`` (Ray sets a worker's title to its task's name)."""
    parent, cmd = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found[child] = cmd.get(child, "")
                frontier.append(child)
    return found


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head on 127.0.0.1 with 2 CPUs; its address. Ray's own log lines stay out of the output.

    It keeps up to 4 idle workers (Ray's default: as many as CPUs), so that this process's warm workers
    survive while a second driver's job starts its own: each cold worker imports torch and lfeval.
    """
    ray = pytest.importorskip("ray")
    with deadline(120):
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 logging_level=logging.ERROR, _system_config={"num_workers_soft_limit": 4})
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), address
    yield address
    ray.shutdown()


# --------------------------------------------------------------------------- benchmark grids
@pytest.fixture(scope="module")
def grid(digits, encoders):
    x = digits.x_test[:32].numpy()
    return {
        "grid": {"digits": {"x": x, "encoders": {p: encoders[p] for p in ("reconstruction", "denoising")}}},
        "metrics": {"RS": RepresentationShift(fractions=(0.2, 0.5), baseline=0.0),
                    "PF": LabelFree(quantus.PixelFlipping(features_in_step=16, disable_warnings=True))},
        "xai_methods": {"Saliency": {}, "Random": {}},
    }


def _bench(grid, out, metrics=None, **kw):
    return benchmark(grid["grid"], metrics or grid["metrics"], grid["xai_methods"], out, iterations=1,
                     nr_perturbations=2, display_progressbar=False, **kw)


def _cells(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))}


@pytest.fixture(scope="module")
def serial_grid(grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial-grid")
    return _bench(grid, out), _cells(out)


def test_ray_grid_equals_serial_grid_cell_by_cell(ray_head, grid, serial_grid, tmp_path):
    with deadline(120):
        table = _bench(grid, tmp_path, backend="ray", address=ray_head)
    pd.testing.assert_frame_equal(table, serial_grid[0], check_exact=True)
    assert _cells(tmp_path) == serial_grid[1]  # the same bytes in every cell file (1 vs 2 torch threads too)
    assert len(serial_grid[1]) == 4


#: the demo's default feature explainers (lfeval.config): captum's Saliency, IntegratedGradients and DeepLift among them
DEMO_EXPLAINERS = ("Saliency", "IntegratedGradients", "GradientShap", "DeepLift", "Random")


def test_the_demos_explainers_are_known_in_ray_workers(ray_head, grid, tmp_path):
    """Every default explainer of the demo runs in Ray workers as it does serially: a worker knows every registered
    name, whatever it unpickled (issue 29: captum's methods were unknown in workers that never imported them)."""
    spec = grid["grid"]["digits"]
    encoders = {"reconstruction": spec["encoders"]["reconstruction"]}
    small = {"grid": {"digits": {"x": spec["x"][:16], "encoders": encoders}},
             "metrics": {"RS": grid["metrics"]["RS"]}, "xai_methods": {m: {} for m in DEMO_EXPLAINERS}}
    with deadline(180):
        table = _bench(small, tmp_path / "ray", backend="ray")
    pd.testing.assert_frame_equal(table, _bench(small, tmp_path / "serial"), check_exact=True)
    assert _cells(tmp_path / "ray") == _cells(tmp_path / "serial")


def test_worker_killed_mid_task_is_retried_and_the_grid_completes(ray_head, grid, serial_grid, tmp_path):
    killed = []

    def kill_one_running_task():
        end = time.time() + 60
        while not killed and time.time() < end:
            running = {pid: c for pid, c in _descendants(os.getpid()).items() if c.startswith("ray::lfeval:")}
            if running:
                pid, title = next(iter(running.items()))
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, title))
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_running_task)
    killer.start()
    with deadline(120):
        table = _bench(grid, tmp_path, backend="ray")
    killer.join()
    assert killed, "no worker was seen running a cell"
    keys = ["data", "encoder", "metric", "test"]
    assert not table.duplicated(keys).any() and len(table) == len(serial_grid[0])  # nothing missing or twice
    pd.testing.assert_frame_equal(table, serial_grid[0], check_exact=True)
    assert _cells(tmp_path) == serial_grid[1]


class FailingMetric(RepresentationShift):
    """A metric with a bug: raises on every call and counts its calls in a file."""

    def __init__(self, calls: str, **kw):
        super().__init__(**kw)
        self.calls = calls

    def evaluate_batch(self, *args, **kwargs):
        with open(self.calls, "a") as fh:
            fh.write("call\n")
        raise ZeroDivisionError("a bug in a user metric")


def test_cell_failing_every_retry_is_named_and_the_other_cells_are_kept(ray_head, grid, serial_grid, tmp_path):
    import ray.cloudpickle

    calls = tmp_path / "calls.txt"
    metrics = {"RS": grid["metrics"]["RS"], "Bug": FailingMetric(str(calls), fractions=(0.2, 0.5), baseline=0.0)}
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        with deadline(120), pytest.raises(CellsFailed) as info:
            _bench(grid, tmp_path / "cells", metrics=metrics, backend="ray")
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    message = str(info.value)
    assert "2 of 4 cell(s) failed" in message
    for enc in ("reconstruction", "denoising"):
        assert f"digits/{enc}/Bug: ZeroDivisionError: a bug in a user metric (after 4 tries)" in message
    assert sorted(f.name for f in info.value.failures) == ["digits/denoising/Bug", "digits/reconstruction/Bug"]
    assert len(calls.read_text().splitlines()) == 2 * 4  # each failing cell ran once and was retried 3 times
    kept = _cells(tmp_path / "cells")
    assert kept == {n: b for n, b in serial_grid[1].items() if "__RS" in n} and len(kept) == 2


def combine(*values, needed):
    return sum(needed.values())


def test_lfeval_error_is_not_retried_and_its_dependants_do_not_run(ray_head):
    """An lfeval error (a bad input: the same on every try) is reported at once; a cell that needs a failed
    cell is reported as not run; the independent cells finish; a dependant receives its inputs by name."""
    import ray.cloudpickle

    from lfeval.execution import Cell, get_executor
    from lfeval.validation import check_positive_int

    cells = [Cell("ok", check_positive_int, (3, "k")), Cell("bad", check_positive_int, (0, "k")),
             Cell("sum", combine, needs=("ok", "given")), Cell("after-bad", combine, needs=("bad",))]
    done = {}
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with deadline(60), get_executor("ray") as ex:
            failures = ex.run(cells, lambda cell, result, *_: done.setdefault(cell.name, result), given={"given": 4},
                              progress=False)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert done == {"ok": 3, "sum": 7}
    assert {f.name: f.error for f in failures} == {
        "bad": "InvalidArgument: `k` must be an integer >= 1, got 0.",
        "after-bad": "not run: it needs bad, which failed"}


def test_without_ray_the_backend_names_the_extra(monkeypatch, grid, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if `pip install lfeval[ray]` had not been run
    with pytest.raises(ExtraMissing, match=r"pip install 'lfeval\[ray\]'"):
        _bench(grid, tmp_path / "grid", backend="ray")
    assert not list((tmp_path / "grid").glob("*.json"))
    code = main(["run", "--backend", "ray", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "lfeval: error:" in err and "lfeval[ray]" in err, err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- lfeval run
CONFIG = """
[run]
pretexts = ["reconstruction", "denoising"]
epochs = 100
latent_dim = 8
checkpoints = 3
cache_dir = "{cache}"
explainers = ["Saliency", "GradientShap", "Random"]
example_methods = ["cosine", "dknn"]
metrics = ["RepresentationShift", "PretextCorrelation", "Sparseness", "SimilarityRate", "FaithfulnessCorrelation"]
meta_metrics = ["RepresentationShift", "SimilarityRate"]
n_explain = 32
n_train_examples = 200
pretext_seeds = [0]
meta_iterations = 1
meta_perturbations = 2
meta_samples = 32
"""
STAGES = 10  # encoders, attributions x2, examples x2, scores x2, pretext, meta x2


def _stored(run: Path) -> dict:
    """``{stage: (SHA-256 of its files, their modification times)}`` of the finished stages of a run."""
    manifest = run / "stages" / "manifest.json"
    try:
        stages = json.loads(manifest.read_text())["stages"]
    except (OSError, ValueError):
        return {}
    return {s: (entry["files"], [p.stat().st_mtime_ns for p in sorted((run / "stages").glob(f"{s}.*"))])
            for s, entry in stages.items()}


def _resume(config: Path, out: Path, name: str, capsys, *backend) -> tuple:
    """Rerun in this process; the numbers of stages computed and loaded."""
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(out), "--name", name, *backend]) == 0
    counts = re.search(r"(\d+) stage\(s\) computed, (\d+) loaded", capsys.readouterr().out)
    return int(counts.group(1)), int(counts.group(2))


def _assert_resumed(run: Path, kept: dict, reference: dict, counts: tuple):
    stored = _stored(run)
    assert counts == (STAGES - len(kept), len(kept))  # only the unfinished stages ran
    assert {s: stored[s] for s in kept} == kept  # the finished ones were loaded: same files, same times
    assert {s: f for s, (f, _) in stored.items()} == reference  # every stage identical to the serial run's
    assert (run / "report.html").is_file()


def test_killed_ray_driver_resumes_only_unfinished_stages(ray_head, encoders, encoder_cache, tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text(CONFIG.format(cache=encoder_cache.as_posix()))
    out = tmp_path / "runs"
    with deadline(180):
        assert main(["run", "--config", str(config), "--out", str(out), "--name", "serial", "--quiet"]) == 0
    reference = {s: f for s, (f, _) in _stored(out / "serial").items()}
    assert len(reference) == STAGES

    # a Ray driver (its own process, joining the head) killed once some of its cells are stored
    cmd = [sys.executable, "-m", "lfeval.cli", "run", "--config", str(config), "--out", str(out), "--name", "ray",
           "--quiet", "--backend", "ray", "--address", ray_head]
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        end = time.time() + 150
        while len(_stored(out / "ray")) < 2 and driver.poll() is None and time.time() < end:  # encoders + a cell
            time.sleep(0.01)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    kept = _stored(out / "ray")
    assert 2 <= len(kept) < STAGES and not (out / "ray" / "report.html").exists(), \
        (kept.keys(), (tmp_path / "driver.log").read_text()[-2000:])
    shutil.copytree(out / "ray", out / "ray-then-serial")  # keeps the files' modification times
    kept_copy = {s: v for s, v in _stored(out / "ray-then-serial").items()}
    assert kept_copy.keys() == kept.keys()

    with deadline(120):  # rerun on Ray: only the unfinished stages
        counts = _resume(config, out, "ray", capsys, "--backend", "ray", "--address", ray_head)
    _assert_resumed(out / "ray", kept, reference, counts)
    with deadline(120):  # ... or finish the same folder serially
        counts = _resume(config, out, "ray-then-serial", capsys)
    _assert_resumed(out / "ray-then-serial", kept_copy, reference, counts)

    # and back: a serial run stopped after some stages finishes on Ray
    shutil.copytree(out / "serial", out / "serial-then-ray")
    manifest = out / "serial-then-ray" / "stages" / "manifest.json"
    state = json.loads(manifest.read_text())
    for stage in ("scores-denoising", "pretext", "meta-SimilarityRate", "examples-reconstruction"):
        del state["stages"][stage]  # as if the run had been killed before storing them
    manifest.write_text(json.dumps(state))
    kept = _stored(out / "serial-then-ray")
    with deadline(120):
        counts = _resume(config, out, "serial-then-ray", capsys, "--backend", "ray")
    _assert_resumed(out / "serial-then-ray", kept, reference, counts)
