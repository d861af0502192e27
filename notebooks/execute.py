"""Execute every notebook of this folder in place with the full settings (``make notebooks``).

The kernel imports this checkout's lfeval (``PYTHONPATH``) and caches encoders in
``<repo>/.lfeval-cache``; cells keep their outputs but no timing metadata, so re-executing a
notebook changes only what its outputs change. ``python notebooks/execute.py [NOTEBOOK ...]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    NotebookClient(nb, timeout=None, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)


def main(paths: list) -> int:
    os.environ.pop("LFEVAL_NOTEBOOK_SMALL", None)  # full settings
    os.environ.setdefault("LFEVAL_CACHE_DIR", str(ROOT / ".lfeval-cache"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for path in [Path(p).resolve() for p in paths] or sorted(HERE.glob("*.ipynb")):
        print(f"executing {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
