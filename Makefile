# The README's commands: `make lab` (the notebooks in JupyterLab), `make report` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test lab report bench clean mutate

# torch is pinned and installed first: 2.13.0 is a CPU build available
# offline here; with it present, pip keeps it for the `torch>=2.2` requirement.
$(STAMP): pyproject.toml setup.py $(wildcard native/*.cpp native/*.hpp)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Two tiers, the whole suite either way: the quick tests first (a failure there stops before the long ones), then
# the end-to-end ones marked `slow` (papermill runs, the browser, Dask clusters in their own processes).
test: $(STAMP)
	$(PY) -m pytest -m "not slow"
	$(PY) -m pytest -m slow

# JupyterLab on the notebooks (open 00-explore.ipynb first), served on 127.0.0.1 only: the URL it prints
# carries the login token. Notebooks find data/ and runs/ from the project folder, not their working
# directory; a relative QMLNB_DATA_DIR is made absolute here for the same reason. No browser is started
# where there is no display (open the printed URL, or forward the port over ssh); Jupyter refuses root
# without --allow-root. LAB_ARGS passes more options, e.g. LAB_ARGS=--ServerApp.port_retries=0.
LAB_PORT ?= 8888
LAB_ARGS ?=
LAB_DISPLAY := $(if $(DISPLAY)$(WAYLAND_DISPLAY),yes,$(if $(filter Darwin,$(shell uname -s)),yes,))
# The data folder reaches the shell as one single-quoted word, taken as written ($(value): make expands nothing
# in it): a name with spaces stays one path, and quotes, backticks or $(...) in it are text, never run.
shell_quote = '$(subst ','\'',$(1))'
LAB_DATA_DIR = $(if $(filter /%,$(firstword $(value QMLNB_DATA_DIR))),,$(CURDIR)/)$(value QMLNB_DATA_DIR)
lab: $(STAMP)
	$(if $(value QMLNB_DATA_DIR),QMLNB_DATA_DIR=$(call shell_quote,$(LAB_DATA_DIR)) )$(VENV)/bin/jupyter lab \
	    --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir="$(CURDIR)/notebooks" \
	    $(if $(LAB_DISPLAY),,--no-browser) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The main job: every stage's grid (params/*.yaml, small sizes) through papermill into runs/,
# then the summary notebook into reports/summary.html. Completed runs are kept and skipped,
# so a second `make report` only redoes failed or interrupted runs. Failed runs still get a
# report (it lists them) and then fail the target. Grids in params/large/ (kernels at scale up to
# 784 qubits) are not part of it: run them by hand (docs/mps.md); the report then shows their runs too.
GRIDS ?= $(sort $(wildcard params/*.yaml))
JOBS  ?= $(shell nproc 2>/dev/null || echo 1)
report: $(STAMP)
	$(PY) -m qmlnb sweep $(GRIDS) --jobs $(JOBS); status=$$?; \
	$(PY) -m qmlnb report && exit $$status

bench: $(STAMP)
	$(PY) -m qmlnb bench gram --dataset digits --n-qubits 8 --n 1797 --backends all --json reports/bench-gram-digits.json

# Mutation testing, not part of `make test` (docs/contributing.md): mutmut plants one small bug at a time in
# the tiling, the out-of-core Gram, the dataset readers and the report's tables ([tool.mutmut] in
# pyproject.toml) and runs the tests of their test files that call the changed function; a mutant that
# survives is a bug those tests miss. MUTANTS narrows the run, e.g. make mutate MUTANTS='qmlnb.kernels.tiling.*';
# results are kept in mutants/ and reused, so a second run only tests what changed.
MUTANTS ?=
MUTATE_STAMP := $(VENV)/.mutate-installed
$(MUTATE_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev,mutate]"
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	set -f; QMLNB_SHARED_DATA=$${QMLNB_SHARED_DATA:-$(CURDIR)/../shared/data} $(VENV)/bin/mutmut run --max-children $(JOBS) $(MUTANTS)
	$(VENV)/bin/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json && echo
	$(VENV)/bin/mutmut results | { grep -v ': not checked$$' || true; }

clean:
	rm -rf $(VENV) build *.egg-info qmlnb/*.so
