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
DEMO_SEED ?= 0
DEMO_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

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
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Same numbers as mmseg_text/training/demo_data.py (used when train.py finds no data).
data: install
	$(PY) scripts/make_synthetic.py --out $(DEMO_DATA) --ids 40 --size 512 --seed 0 --skip-existing
	$(PY) scripts/check_data.py $(DEMO_DATA)

# venv -> synthetic data -> accelerate launch train -> predict (with metadata) -> evaluate -> report
demo: install
	@start=$$(date +%s); set -e; \
	$(MAKE) --no-print-directory data; \
	$(VENV)/bin/accelerate launch --quiet --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(DEMO_THREADS) \
		scripts/train.py --config configs/demo.yaml output_dir=$(DEMO_OUT) data.root=$(DEMO_DATA) train.seed=$(DEMO_SEED); \
	$(PY) scripts/predict.py --checkpoint $(DEMO_OUT)/best --images $(DEMO_DATA)/test/DCM \
		--with-meta --meta $(DEMO_DATA)/meta_data.xlsx --save-overlays $(DEMO_OUT)/overlays --out $(DEMO_OUT)/submission.csv; \
	$(PY) scripts/evaluate.py --pred $(DEMO_OUT)/submission.csv --gt $(DEMO_DATA)/test/outputs_json --out $(DEMO_OUT); \
	$(PY) scripts/report.py $(DEMO_OUT) --evaluation $(DEMO_OUT)/evaluation.json --overlays $(DEMO_OUT)/overlays \
		--wall-seconds $$(( $$(date +%s) - start ))

benchmarks: install
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/model_step.py
	$(PY) benchmarks/peer.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
