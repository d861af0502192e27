# `make demo`: set up .venv (if missing) and run the main job on the embedded digits data.
# `make test`: set up .venv (if missing) and run the whole test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lfeval-installed
# torch/torchvision: pinned so pip takes the wheels on this machine's disk (MetaQuantus imports torchvision).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install lint clean chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lfeval run

test: $(STAMP) chromium
	$(PY) -m pytest -q

# Debian's headless Chromium, for the test that renders report.html (skipped without it, outside CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "note: could not install Debian's chromium; the report rendering test will be skipped"; }

lint: $(STAMP)
	$(VENV)/bin/ruff check lfeval tests benchmarks

clean:
	rm -rf $(VENV) runs .lfeval-cache
