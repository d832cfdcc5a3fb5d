# xnet — common commands. `make demo` is the one-line start on a fresh machine.
PY ?= python
# torch is installed only when missing (a GPU machine's CUDA torch is kept), from pip's configured index by
# default; a given index only when asked: the CPU build with TORCH_INDEX=https://download.pytorch.org/whl/cpu, a
# CUDA one with e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu126 (https://pytorch.org/get-started/locally/).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
DATA ?= $(if $(XNET_DATA),$(XNET_DATA),$(abspath ../shared/data))

.PHONY: install demo train eval test test-fast bench lint format clean

install:  ## torch only if missing (TORCH_INDEX picks the CPU/CUDA build), then the project and its test tools
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') is installed: kept"; \
	else \
		$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PY) -m pip install -q -e ".[dev]"

demo: install  ## train a small xDnCNN on the embedded sample photo (no download) and score it
	$(PY) -m xnet.train experiment=demo

train:  ## e.g. make train ARGS="task=denoise model=xdncnn trainer=gpu"
	XNET_DATA=$(DATA) $(PY) -m xnet.train $(ARGS)

eval:  ## e.g. make eval ARGS="model=dncnn weights=PATH data/test=bsd68 task.sigma=25"
	XNET_DATA=$(DATA) $(PY) -m xnet.evaluate $(ARGS)

test:  ## the whole suite (CPU, one thread per process)
	XNET_DATA=$(DATA) WANDB_MODE=disabled $(PY) -m pytest -q

test-fast:  ## skip the slow protocol/baseline checks
	XNET_DATA=$(DATA) WANDB_MODE=disabled $(PY) -m pytest -q -m "not slow"

lint:  ## ruff check + ruff format --check ([tool.ruff] in pyproject.toml); CI runs the same (tests/test_lint.py)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format:  ## rewrite the tree as `make lint` wants it: ruff's safe fixes, then ruff format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench:  ## side-by-side speed/memory of the x-models vs their baselines
	$(PY) scripts/benchmark.py --device all --json benchmark.json

clean:
	rm -rf outputs multirun .pytest_cache
