# futbot: `make demo` and `make test` are the whole set-up on a fresh clone.
# Each target creates or updates .venv from the pinned files (settings.ini + requirements.lock).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,deep,xgb
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench soak lab export readme lock clean-nbs site

venv: $(STAMP)

$(STAMP): settings.ini setup.py requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel 'setuptools<81'
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[$(EXTRAS)]'
	$(BIN)/python -m ipykernel install --sys-prefix --name futbot --display-name "futbot (.venv)" >/dev/null
	@touch $(STAMP)

# Notebooks and package in sync, notebook tests (slow cells skipped), then pytest.
test: $(STAMP)
	@bash tools/check_export.sh
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/python -m pytest tests/ -q -p no:cacheprovider --durations=15

demo: $(STAMP)
	$(BIN)/futbot demo

bench: $(STAMP)
	@$(BIN)/python bench/run.py $(FIGURES)

soak: $(STAMP)
	@$(BIN)/python bench/soak.py

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=nbs --no-browser --MappingKernelManager.default_kernel_name=futbot $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

export: $(STAMP)
	$(BIN)/nbdev_export

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

# README.md from nbs/index.ipynb: nbdev_readme where Quarto exists, nbconvert where it does not.
readme: $(STAMP)
	@if command -v quarto >/dev/null; then $(BIN)/nbdev_readme; \
	else $(BIN)/python tools/readme.py; fi

# The report site: executed pipeline notebooks, every report under artifacts/, API and user docs, into _site/.
site: $(STAMP)
	$(BIN)/futbot report --out _site

# Regenerate requirements.lock from a fresh venv built from settings.ini's direct pins.
lock:
	rm -rf /tmp/futbot-lock && $(PYTHON) -m venv /tmp/futbot-lock
	/tmp/futbot-lock/bin/pip install -q -e '.[dev,deep,xgb]'
	{ echo "# Transitive pins for every install path: pip install -c requirements.lock -e '.[dev,deep,xgb]'."; \
	  echo "# Regenerate with 'make lock' after changing a pin in settings.ini."; \
	  /tmp/futbot-lock/bin/pip freeze | grep -v -iE '^(futbot|-e )' | sed 's/+cpu$$//'; } > requirements.lock
