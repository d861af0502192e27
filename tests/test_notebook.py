"""The notebooks: committed executed (full mode, outputs in every code cell), and the ranking notebook
runs top to bottom on the public API (a copy, small settings)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK = ROOT / "notebooks" / "ranking_explainers.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_executed_in_full_mode(path):
    """`make notebooks` output: every code cell ran once, in order, has outputs and none is an error."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run `make notebooks`"
    for i, cell in enumerate(code):
        assert cell.outputs, f"code cell {i} of {path.name} has no output; run `make notebooks`"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"code cell {i} of {path.name} has an error: {errors[0].get('ename')}"
    text = "".join(str(o.get("text", "")) for c in code for o in c.outputs if o.output_type == "stream")
    assert "full mode" in text and "small mode" not in text  # executed with the full settings


def test_ranking_notebook_executes(tmp_path, monkeypatch, encoders, encoder_cache):
    monkeypatch.setenv("LFEVAL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("LFEVAL_CACHE_DIR", str(encoder_cache))  # the session's trained encoders
    # the kernel starts in tmp_path: point it at this checkout's lfeval, not an installed one
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:  # execute from scratch: the committed outputs must not satisfy the checks below
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    errors = [o for outs in outputs.values() for o in outs if o.output_type == "error"]
    assert not errors
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                   for outs in outputs.values() for o in outs)
    assert "small mode: 32 explained test digits" in text
    for name in ("RepresentationShift", "FaithfulnessCorrelation", "mean_rank", "IAC_NR", "FC baseline=uniform"):
        assert name in text, name
    images = sum("image/png" in o.get("data", {}) for outs in outputs.values() for o in outs)
    assert images >= 4  # attribution maps, radar chart, two meta areas, sensitivity heat map
    assert all(outs for outs in outputs.values())  # every code cell shows something


def test_your_encoder_notebook_executes(tmp_path, monkeypatch):
    """The user-encoder notebook (a torchvision ResNet-18 on a folder of images) runs on the public API."""
    monkeypatch.setenv("LFEVAL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(ROOT / "notebooks" / "your_encoder.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [c.outputs for c in nb.cells if c.cell_type == "code"]
    assert all(outputs) and not [o for outs in outputs for o in outs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for outs in outputs
                   for o in outs)
    assert "small mode" in text and "mean_rank" in text and "IAC_NR" in text and "[encoders.resnet18]" in text
    scores = [o for outs in outputs for o in outs if "RepresentationShift" in str(o.get("data", {}))]
    assert scores
