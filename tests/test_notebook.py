"""The ranking notebook runs top to bottom on the public API (small settings)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "ranking_explainers.ipynb"


def test_ranking_notebook_executes(tmp_path, monkeypatch, encoders, encoder_cache):
    monkeypatch.setenv("LFEVAL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("LFEVAL_CACHE_DIR", str(encoder_cache))  # the session's trained encoders
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    errors = [o for outs in outputs.values() for o in outs if o.output_type == "error"]
    assert not errors
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for outs in outputs.values() for o in outs)
    for name in ("RepresentationShift", "FaithfulnessCorrelation", "mean_rank", "IAC_NR", "FC baseline=uniform"):
        assert name in text, name
    images = sum("image/png" in o.get("data", {}) for outs in outputs.values() for o in outs)
    assert images >= 4  # attribution maps, radar chart, two meta areas, sensitivity heat map
