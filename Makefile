# The README's two commands: `make report` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test report bench clean

# torch is pinned and installed first: 2.13.0 is a CPU build available
# offline here; with it present, pip keeps it for the `torch>=2.2` requirement.
$(STAMP): pyproject.toml setup.py $(wildcard native/*.cpp native/*.hpp)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The main job: every stage's grid (params/*.yaml, small sizes) through papermill into runs/,
# then the summary notebook into reports/summary.html. Completed runs are kept and skipped,
# so a second `make report` only redoes failed or interrupted runs. Failed runs still get a
# report (it lists them) and then fail the target.
GRIDS ?= $(sort $(wildcard params/*.yaml))
JOBS  ?= $(shell nproc 2>/dev/null || echo 1)
report: $(STAMP)
	$(PY) -m qmlnb sweep $(GRIDS) --jobs $(JOBS); status=$$?; \
	$(PY) -m qmlnb report && exit $$status

bench: $(STAMP)
	$(PY) -m qmlnb bench gram --dataset digits --n-qubits 8 --n 1797 --backends all --json reports/bench-gram-digits.json

clean:
	rm -rf $(VENV) build *.egg-info qmlnb/*.so
