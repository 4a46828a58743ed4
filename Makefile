# Two commands do everything: `make demo` (a real search on digits, dashboard, export)
# and `make test` (the whole test suite). Both create / reuse .venv, installed from the lock
# (locks/dev.txt: every transitive dependency pinned with its hashes; `make lock` rebuilds it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := locks/dev.txt
# pip-tools, pinned, in a throw-away venv: only `make lock` uses it
PIP_TOOLS := pip-tools==7.6.2
COMPILE := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links

.PHONY: demo test install bench-install lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pikenas search --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

# the benchmark-only extra (Syne Tune's MOASHA, kaleido, grpcio) on top, from locks/bench.txt
bench-install: $(STAMP)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r locks/bench.txt
	$(BIN)/pip check

lint: $(STAMP)
	$(BIN)/ruff check .

# Re-resolve the three locks from pyproject.toml (after changing a dependency there).
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet '$(PIP_TOOLS)'
	$(VENV)-lock/bin/pip-compile $(COMPILE) --extra dev -o locks/dev.txt pyproject.toml
	$(VENV)-lock/bin/pip-compile $(COMPILE) --extra dev --extra bench -o locks/bench.txt pyproject.toml
	$(VENV)-lock/bin/pip-compile $(COMPILE) -o locks/runtime.txt pyproject.toml
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) runs
