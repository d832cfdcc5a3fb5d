#!/usr/bin/env bash
# A GPU slot (the device tool's machine: torch, Lightning and Triton installed; hydra-core, omegaconf,
# antlr4 and kornia carried as wheels in .whl/, the data sets in .gpu_data/):
#
#   carry [".whl", ".gpu_data"]; command: bash scripts/gpu_slot.sh 9.2
#
# Prepare here once (both folders are git-ignored, see README "GPU slots"):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl hydra-core==1.3.8 omegaconf==2.3.1 kornia==0.9.0
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 -d .whl kornia_rs==0.2.0
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#   mkdir -p .gpu_data && cp -r $XNET_DATA/{Train400,Set12,BSD68} .gpu_data/
# Everything the queue writes goes to $OUT (at most 8 files); bring it home with
#   python scripts/gpu_queue.py --ingest <the returned folder>
set -u
budget="${1:-9}"
shift || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" XNET_DATA="$PWD/.gpu_data" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
exec python3 scripts/gpu_queue.py --budget-min "$budget" --out "${OUT:-queue_out}" --data "$XNET_DATA" "$@"
