# make demo: set up .venv (pinned) and run the TwoMoon demo. make test: set up and test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_workdir

.PHONY: demo test test-all bench clean

$(STAMP): requirements.lock setup.cfg pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python demo.py --workdir=$(DEMO_DIR)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python -m pytest -q

# The CPU benchmarks of BENCHMARKS.md (minutes each; never part of `make test`). requirements.lock
# pins torch==2.13.0 for the PyTorch reference, so the test venv runs its smoke test too.
bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.step_bench --labeled_batch=16 --mu=7 --runs=5
	$(VENV)/bin/python -m benchmarks.compare --labeled_batch=16,64 --mu=7 --rounds=5
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/python -m benchmarks.pipeline_bench --size=cifar,imagenet

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info .pytest_cache
