# The two commands of the README: `make demo` and `make test`. Both create and reuse .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# No model hub is reachable here: fail at once instead of retrying for ~50 s.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

DEMO_DATA ?= data/synthetic
DEMO_OUT ?= runs/demo

.PHONY: install test test-fast demo data check benchmarks clean

install: $(STAMP)

# torch and torchvision are installed together from the package index: a CPU-only torch
# wheel without a matching torchvision breaks `import torchvision` (and so timm/open_clip).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch>=2.14" "torchvision>=0.29"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: install
	$(PY) -m pytest -q -m "not slow"

data: install
	$(PY) scripts/make_synthetic.py --out $(DEMO_DATA) --ids 40 --size 512 --seed 0 --skip-existing
	$(PY) scripts/check_data.py $(DEMO_DATA)

demo: data
	@echo "demo: training, prediction and evaluation are added by the training issue"

benchmarks: install
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/model_step.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
