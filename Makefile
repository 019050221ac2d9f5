# The two commands: `make demo` and `make test`. Both create .venv when missing and install into it;
# the install is skipped when pyproject.toml has not changed since the last one.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
PYTEST := $(PY) -m pytest

.PHONY: install demo test test-all test-gpu calibrate bench clean

# The demo, calibrate and bench need only the package; the tests add their extras (moto, MLflow,
# pytest-xdist), which take most of a fresh install's time, so `make demo` does not wait for them.
define install_into_venv
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e "$(1)"
endef

$(RUNTIME_STAMP): pyproject.toml
	$(call install_into_venv,.)
	@touch $@

$(TEST_STAMP): pyproject.toml
	$(call install_into_venv,.[test])
	@touch $@ $(RUNTIME_STAMP)

install: $(TEST_STAMP)

demo: $(RUNTIME_STAMP)
	$(PY) -m seal_ray.demo

# Fast tiers (unit + integration) in two pytest workers: most tests wait on Ray, servers and
# subprocesses, so two workers finish in about half the time on two cores. A run that collects no
# test fails (pytest exit 5).
test: $(TEST_STAMP)
	$(PYTEST) -m "not slow" -q -n 2 --dist loadgroup

# Everything, the slow tier included.
test-all: $(TEST_STAMP)
	$(PYTEST) -q

# The GPU tier (tests marked gpu): run it on a machine with CUDA; without one every test is skipped.
test-gpu: $(TEST_STAMP)
	$(PYTEST) -m gpu -q -rs

calibrate: $(RUNTIME_STAMP)
	$(VENV)/bin/seal-ray calibrate --seeds 8 --first-seed 100 --base-seeds 0,1,2 --jobs 2 --markdown docs/calibration.md --quiet

bench: $(RUNTIME_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs .pytest_cache
