# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv with the pinned versions on first use; later runs reuse it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs/demo

.PHONY: install demo experiments test lint data clean

install: $(STAMP)

# uv (pinned) installs the pinned wheels, torch's some GB of them, with parallel
# downloads: the longest part of a first `make demo` on a fresh machine.
$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt uv
	$(PY) -m uv pip install --quiet --python $(PY) -c requirements/constraints.txt \
	    -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package when apt is usable; otherwise the data
# modules fall back to torchvision's download.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null || true; fi

demo: install data
	$(PY) -m reports.demo --out $(OUT)

# The paper's experiments beyond the pictures (Fig. 6, Table 3, Tables 4-7) on
# offline data: trains 12 small networks, writes $(EXPERIMENTS)/report.md.
EXPERIMENTS ?= experiments/results
experiments: install data
	$(PY) -m experiments --out $(EXPERIMENTS)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) runs
