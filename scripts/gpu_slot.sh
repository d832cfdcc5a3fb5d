#!/usr/bin/env bash
# A GPU slot (the device tool's machine: torch, Lightning and Triton installed; hydra-core, omegaconf
# and antlr4 carried as wheels in .whl/, the data packed in .gpu_data/, Triton's kernels in .triton_cache/):
#
#   carry [".whl", ".gpu_data", ".triton_cache"]; command: bash scripts/gpu_slot.sh 9
#
# Prepare here before each slot (the three folders are git-ignored; see README "GPU slots"):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#   python scripts/gpu_prepare.py          # packs the sets the next queue entries need, checks the 64 MiB carry
# Everything the queue writes goes to $OUT (at most 8 files); bring it home with
#   python scripts/gpu_queue.py --ingest <the returned folder>
set -u
export XNET_SLOT_T0="$(date +%s.%N)"  # the budget counts from here: the installs below are part of it
budget="${1:-9}"
shift || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || exit 1
# Triton's group files name their members by absolute path: the cache lives at the same place in every slot
export PYTHONPATH="/tmp/site:$PWD" XNET_DATA="$PWD/.gpu_data" PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/xnet_triton_cache
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
exec python3 scripts/gpu_queue.py --budget-min "$budget" --out "${OUT:-queue_out}" --data "$XNET_DATA" \
  --triton-cache-dir "$TRITON_CACHE_DIR" "$@"
