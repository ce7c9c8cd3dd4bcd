# SafeEdge developer entry points. Every target sets up what it needs from nothing:
# the virtual environment (.venv), the Python packages, and the system packages the tests use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# gcc, libc6-dev, python3-dev: safeedge warm-cache compiles the native kernels (rules.native)
SYSTEM_PACKAGES := mosquitto mosquitto-clients socat chromium chromium-driver fonts-wqy-microhei \
  gcc libc6-dev python3-dev
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: demo test soak check system-deps venv clean lint format bundle

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "SafeEdge needs Python >= 3.11"' \
	  || { echo "error: Python 3.11 or newer is required (found $$($(PYTHON) --version))"; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) \
	  || { echo "error: could not create $(VENV); on Debian: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

# System packages: installed with apt-get when missing and we are root; otherwise the exact
# command is printed and the target fails (the tests need real brokers and pty pairs).
system-deps:
	@missing=""; \
	for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "error: missing system packages:$$missing"; \
	    echo "run:   sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || $(MAKE) --no-print-directory system-deps \
	  || echo "note: no Mosquitto; the demo runs without a broker and the agent buffers"
	@$(BIN)/safeedge warm-cache --cache-dir "$(NUMBA_CACHE_DIR)" >/dev/null \
	  || echo "note: kernels not warmed; the demo compiles them at start"
	$(BIN)/safeedge demo $(DEMO_ARGS)

# The default run leaves out the long soaks (marker soak); each has a bounded version in it.
PYTEST_ARGS ?= -m "not soak"
# The agents the tests start run the native kernels, as an installed one does (install.sh runs
# warm-cache too); tests/test_native_kernels.py also runs the rule suite on numba's JIT.
test: system-deps $(STAMP)
	$(BIN)/safeedge warm-cache --require-native --cache-dir "$(NUMBA_CACHE_DIR)"
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

soak: system-deps $(STAMP)
	$(BIN)/python -m pytest -q -m soak

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The offline install bundle (docs/commissioning.md): dist/safeedge-bundle-*.tar.gz with every
# wheel for this Python and machine; install it with systemd/install.sh --from-bundle.
bundle: $(STAMP)
	$(BIN)/python systemd/make_bundle.py --out dist $(BUNDLE_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
