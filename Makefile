# make demo: set up .venv (pinned) and run the TwoMoon demo. make test: set up and run the
# contributor's tests (under 10 minutes on 2 cores); make test-all: every test (CI).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_workdir

.PHONY: demo test test-all venv-gpu bench bench-test clean

$(STAMP): requirements.lock setup.cfg pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python demo.py --workdir=$(DEMO_DIR)

# Tests in two parts: two pytest workers, each taking whole files (`--dist loadfile`, so a
# file's module fixtures run once), then the timing-sensitive tests (marked `serial`:
# SIGKILL timing, the quiet-machine checks) alone. `make test` leaves out the tests marked
# `slow`; `make test-all` (what CI runs) runs every test.
PYTEST := TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python -m pytest -q

test: $(STAMP)
	$(PYTEST) -n 2 --dist loadfile -m "not slow and not serial"
	$(PYTEST) -m "serial and not slow"

test-all: $(STAMP)
	$(PYTEST) -n 2 --dist loadfile -m "not serial"
	$(PYTEST) -m "serial"

# An NVIDIA GPU environment: requirements-gpu.lock (the same pins plus JAX's CUDA 13 wheels)
# in .venv-gpu. Then: .venv-gpu/bin/python main.py --config=... --workdir=...
GPU_VENV := .venv-gpu

venv-gpu: $(GPU_VENV)/.installed

$(GPU_VENV)/.installed: requirements-gpu.lock setup.cfg pyproject.toml
	rm -rf $(GPU_VENV)
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_VENV)/bin/python -m pip install -q -r requirements-gpu.lock
	$(GPU_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The PyTorch reference of the benchmarks is installed here only (requirements-bench.lock,
# on top of requirements.lock); `make test` and `make demo` never install it.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) requirements-bench.lock
	$(VENV)/bin/python -m pip install -q -r requirements-bench.lock
	touch $(BENCH_STAMP)

# The benchmark scripts' smoke tests, PyTorch reference included (a minute or two).
bench-test: $(BENCH_STAMP)
	$(PYTEST) tests/benchmarks_test.py

# The CPU benchmarks of BENCHMARKS.md (minutes each; never part of `make test`), after their
# smoke tests. Run it alone: each script waits for a quiet machine (no other busy process,
# 1-minute load <= half the cores) and refuses after 15 minutes; every record carries the
# load before and after. The smoke tests' load decays before the first one starts.
bench: bench-test
	$(VENV)/bin/python -m benchmarks.step_bench --labeled_batch=16 --mu=7 --runs=5 --cpu_convolutions=eigen
	$(VENV)/bin/python -m benchmarks.compare --labeled_batch=16 --mu=7 --rounds=8 --cpu_convolutions=eigen
	$(VENV)/bin/python -m benchmarks.compare --labeled_batch=64 --mu=7 --rounds=3 --cpu_convolutions=eigen
	$(VENV)/bin/python -m benchmarks.profile_ops --images=240 --rounds=5 --cpu_convolutions=eigen
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python -m benchmarks.pipeline_bench --size=cifar,imagenet --batches=10 --warmup=3

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info .pytest_cache
