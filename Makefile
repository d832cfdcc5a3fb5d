# xnet — common commands. `make demo` is the one-line start on a fresh machine.
PY ?= python
TORCH ?= torch==2.13.0
DATA ?= $(if $(XNET_DATA),$(XNET_DATA),$(abspath ../shared/data))

.PHONY: install demo train eval test test-fast bench lint clean

install:  ## torch first (a CPU build where one is at hand), then the project and its test tools
	$(PY) -m pip install -q $(TORCH)
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

bench:  ## side-by-side speed/memory of the x-models vs their baselines
	$(PY) scripts/benchmark.py --device all --json benchmark.json

clean:
	rm -rf outputs multirun .pytest_cache
