# radlab: two commands on a fresh machine (Python >= 3.10 and make, nothing else).
#   make lab    create .venv, install radlab, open JupyterLab on notebooks/
#   make test   create/update the same .venv with the test extra, run every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PORT   ?= 8888
LAB_ARGS ?=
# JupyterLab refuses to run as root without this flag (containers, Colab-like VMs).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
PYTEST_ARGS ?=

.PHONY: lab test venv clean constraints notebooks-check notebooks-strip bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Re-install only when the dependency files change (stamps live inside the venv).
$(VENV)/.stamp-runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@ $(VENV)/.stamp-runtime

venv: $(VENV)/.stamp-runtime

lab: $(VENV)/.stamp-runtime
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --port=$(PORT) $(ROOT_FLAG) $(LAB_ARGS)

# pytest exits 5 when it collects nothing: say so and do not count it as a failure.
test: $(VENV)/.stamp-test
	@start=$$(date +%s); \
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s of tests"; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

notebooks-check: $(VENV)/.stamp-runtime
	$(BIN)/python -m radlab.notebooks check notebooks/*.ipynb

notebooks-strip: $(VENV)/.stamp-runtime
	$(BIN)/python -m radlab.notebooks strip notebooks/*.ipynb

bench: $(VENV)/.stamp-test
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Pin what the venv holds now (after a deliberate upgrade), keeping torch's pin portable.
constraints: $(VENV)/.stamp-test
	{ sed -n '1,3p' constraints.txt; $(PIP) freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > constraints.tmp && mv constraints.tmp constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts tests/notebook_times.json
