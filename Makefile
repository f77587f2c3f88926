# `make up` runs a local platform; `make test` runs the test suite. Both build .venv first:
# `up` with only what running needs, `test` also with the test tools, the Kubernetes client and
# (as root, through apt-get) the system packages its tests use.
PYTHON ?= python3
VENV ?= .venv
DATA ?= data
PORT ?=
BIN := $(VENV)/bin
PIP := $(BIN)/pip --quiet --disable-pip-version-check
RUN_EXTRAS := compute,cad,mesh
TEST_EXTRAS := compute,cad,mesh,kubernetes,test

.PHONY: up web kernels test screenshots lint system-packages clean
.NOTPARALLEL:

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "TwinStack needs Python 3.11+"'
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian run 'apt-get install python3-venv'"; exit 1; }
	@$(PIP) install --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@echo "installing TwinStack into $(VENV)"
	@$(PIP) install -e '.[$(RUN_EXTRAS)]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "installing TwinStack and its test tools into $(VENV)"
	@$(PIP) install -e '.[$(TEST_EXTRAS)]'
	@touch $@

web:  # the page gss serves at /, bundled by npm tools (scripts/build-web.sh)
	@scripts/build-web.sh || echo "warning: the web page is not built; the API and the Python client work without it"

kernels:  # compile numba's kernels into its cache now, not in a user's first call
	@$(BIN)/python -m twinstack.sim.kriging_local

up: $(VENV)/.installed-run web kernels
	$(BIN)/twinstack up --data-dir $(DATA)$(if $(PORT), --port $(PORT))

system-packages:
	@PYTHON=$(PYTHON) scripts/system-packages.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/mypy

test: system-packages
	@# made meanwhile (mostly downloads): the container tests' debootstrap base image and the
	@# manifest tests' checkov venv; the tests wait for them (locks) where they are not done
	@if [ "$$(id -u)" = 0 ] && command -v podman > /dev/null && \
	    command -v debootstrap > /dev/null; then \
	  deploy/containers/base.sh > "$${TMPDIR:-/tmp}/twinstack-base-image.log" 2>&1 & fi
	@$(PYTHON) tests/deploy/checkov_venv.py > "$${TMPDIR:-/tmp}/twinstack-checkov.log" 2>&1 &
	@$(MAKE) --no-print-directory lint kernels
	$(BIN)/python -m pytest -m 'not alone'
	$(BIN)/python -m pytest -m alone -n 0

screenshots: system-packages $(VENV)/.installed-test  # PNGs of the page's main views, in screenshots/
	TWINSTACK_SCREENSHOTS=$(CURDIR)/screenshots $(BIN)/python -m pytest -n 0 tests/e2e/test_web_page.py
	@ls screenshots/*.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
