#!/usr/bin/env bash
# The one prepared check for a lent H100/H200 (docs/benchmarks.md, issue 33): the `svd bench` matrix at SVD-XT's size
# (25 frames, 1024x576) with random full-size weights and diffusers on the same weights, the same on an emulated
# 8 GB card, the train-lora step's memory at 1024x576x14 in bf16 and fp16, and torch.compile last. About 6 minutes
# on an H100; every part has its own time limit, so a slow part cannot take the others' results with it.
#
#   bash bench/gpu-check.sh                       # results under $OUT (default out/gpu-check)
#   SVD_CHECK_SMOKE=1 bash bench/gpu-check.sh     # the same steps at a tiny size, on any machine (CPU included)
#
# The machine has torch but no network, and none of diffusers, imageio-ffmpeg or bitsandbytes: their wheels travel
# in wheels/ (pip download --no-deps -d wheels diffusers==0.42.1 bitsandbytes==0.50.2; carried, not committed).
# A part whose package is missing is skipped by svd bench with a line saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
start=$SECONDS
log() { echo "[$((SECONDS - start)) s] $*" | tee -a "$OUT/log.txt"; }
run() {  # run LIMIT NAME COMMAND...: stdout to NAME.txt, stderr to NAME.err, the exit status in the log
  local limit=$1 name=$2
  shift 2
  log "$name: $*"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  log "$name: exit $?"
}

PY=${PYTHON:-python3}
{ nvidia-smi || true; $PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"; } > "$OUT/env.txt" 2>&1
# The project without dependencies (no network there); if pip cannot install it, it runs from this folder. The
# smoke run leaves the environment it runs in as it was.
if [ -z "${SVD_CHECK_SMOKE:-}" ]; then
  if ls wheels/*.whl > /dev/null 2>&1; then
    $PY -m pip install --no-deps --no-index wheels/*.whl > "$OUT/install.txt" 2>&1
  fi
  $PY -m pip install --no-deps --no-index --no-build-isolation -e . >> "$OUT/install.txt" 2>&1 \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -m pip list 2>/dev/null | grep -iE "^(torch|diffusers|transformers|bitsandbytes|svdcli) " >> "$OUT/env.txt"

if [ -n "${SVD_CHECK_SMOKE:-}" ]; then  # the script's own test: every step, tiny and quick
  SIZE=(--preset demo --size 128x64 --frames 4 --steps 2 --device "${SVD_CHECK_DEVICE:-cpu}")
  HALF=fp32 TRAIN=(--model demo --size 128x64 --frames 4 --steps 2 --device "${SVD_CHECK_DEVICE:-cpu}")
  MATRIX=none:fp32:fp32,model:fp32:fp32,sequential:fp32:fp32,none:fp8:fp32
  SMALL=sequential:fp8:fp32
  COMPILE=  # compiling takes minutes on a CPU; svd bench's tests cover the rest
  VRAM=()
else
  SIZE=(--preset svd-xt --steps 3)
  HALF=bf16 TRAIN=(--size 1024x576 --frames 14 --rank 16 --steps 3)
  MATRIX=none:bf16:bf16,none:fp16:fp16,model:bf16:bf16,sequential:bf16:bf16,none:fp8:bf16,model:fp8:bf16,sequential:fp8:bf16,model:int8:bf16
  SMALL=sequential:fp8:bf16,model:fp8:bf16,sequential:int8:bf16
  COMPILE=none:bf16:bf16,none:bf16:bf16:compile
  VRAM=(--vram 8)
fi

run 240 bench $PY -m svdcli bench "${SIZE[@]}" --configs "$MATRIX" --compare-diffusers --json "$OUT/bench.json"
if [ ${#VRAM[@]} -gt 0 ]; then
  run 100 bench-8gb $PY -m svdcli bench "${SIZE[@]}" --configs "$SMALL" "${VRAM[@]}" --json "$OUT/bench-8gb.json"
fi
for dtype in $HALF fp16; do
  run 75 "train-$dtype" $PY bench/train_memory.py "${TRAIN[@]}" --dtype "$dtype"
done
if [ -n "$COMPILE" ]; then
  run 180 bench-compile $PY -m svdcli bench "${SIZE[@]}" --configs "$COMPILE" --json "$OUT/bench-compile.json"
fi
log "done"
