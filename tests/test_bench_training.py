"""benchmarks/bench_training.py --step-floor and benchmarks/bench_ensemble.py, the GPU session's training parts,
checked on the CPU: their captured-step rows run StaticStep there (the CUDA graph's buffers with an eager step), so
the scripts' wiring of lfeval.models.graphed is exercised without a GPU, and its arithmetic must be eager's."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # their helpers import as the scripts do
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_step_floor_graph_rows_are_eager_arithmetic_on_the_cpu(tmp_path):
    bench = _load("bench_training")
    out = bench.step_floor("cpu", batches=(64,), modes=("eager", "graph", "graph-cl"), precisions=("highest",),
                           steps=2, json_path=tmp_path / "floor.json", data="digits")
    rows = {r["mode"]: r for r in out["rows"]}
    assert set(rows) == {"eager", "graph", "graph-cl"} and not any("error" in r for r in rows.values()), rows
    assert rows["graph"]["loss_vs_eager"] == 0.0  # the same 6 steps from the same weights, bit for bit
    assert rows["graph-cl"]["loss_vs_eager"] < 1e-5  # channels-last sums in another order
    assert json.loads((tmp_path / "floor.json").read_text())["rows"] == out["rows"]


def test_bench_ensemble_runs_every_row_on_the_cpu(tmp_path):
    bench = _load("bench_ensemble")
    rows = bench.main(["--device", "cpu", "--data", "digits", "--members", "2", "--steps", "1", "--precisions",
                       "highest", "--no-profile", "--json", str(tmp_path / "ensemble.json")])
    assert [(r["members"], r["step"]) for r in rows] == [(2, "eager"), (2, "graph")]
    assert all("error" not in r and r["lone_ms"] > 0 and r["vmap_ms"] > 0 for r in rows), rows
    assert json.loads((tmp_path / "ensemble.json").read_text())["rows"] == rows


@pytest.mark.parametrize("part", ["floor", "ensemble", "compile", "fastg"])
def test_gpu_session_names_each_part(part):
    """gpu_session.sh runs each part it documents (a part missing from its case statement would stop the call)."""
    script = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    assert f"\n        {part}) cmd=(" in script and f"[{part}]=" in script
