#!/usr/bin/env bash
# The full benchmark matrix on a GPU machine, in one call, from a plain checkout (nothing installed):
#   1. SmolLM2-135M base vs int8, int4 g64 / g128 / per channel, 2:4 (recipes run on the base in memory):
#      perplexity over the whole WikiText-2 test set, prefill 512/2048, decode batch 1 and 8 (static cache,
#      compiled step), peak memory of the timed phases and size → benchmarks/results/<date>-<gpu>.json + .png
#   2. speed only, random weights: SmolLM2-135M / Llama-3.2-1B / Llama-3-8B shapes → <date>-<gpu>-shapes.json,
#      and the 8B shape bf16 vs the same formats → <date>-<gpu>-llama3-8b-quant.json
#   3. SmolLM2 shape under each decode mode (eager / graph / compile) → <date>-<gpu>-mode-<mode>.json
# Usage: bash scripts/gpu_bench.sh [BASE]   BASE: a model dir, a .gguf file or 'smollm2' (default:
#        $COMPRESS_BASE, else /root/m/smollm2.gguf when present, else smollm2). Env: MAX_WINDOWS (all),
#        OUT_DIR (benchmarks/results), SKIP_SHAPES=1, SKIP_MODES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
BASE="${1:-${COMPRESS_BASE:-}}"
if [ -z "$BASE" ]; then
  if [ -f /root/m/smollm2.gguf ]; then BASE=/root/m/smollm2.gguf; else BASE=smollm2; fi
fi
OUT_DIR="${OUT_DIR:-benchmarks/results}"
GPU="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "cpu")')"
STEM="$OUT_DIR/$(date -u +%Y-%m-%d)-$GPU"
mkdir -p "$OUT_DIR"
WIN=()
[ -n "${MAX_WINDOWS:-}" ] && WIN=(--max-windows "$MAX_WINDOWS")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

FORMATS=(recipes/int8.yaml recipes/int4-rtn.yaml recipes/int4-g128-rtn.yaml recipes/int4-pc-rtn.yaml recipes/magnitude-2of4.yaml)
"$PY" -m compress bench "$BASE" "${FORMATS[@]}" "${WIN[@]}" \
  --prefill 512,2048 --batch 1,8 --json "$STEM.json" --plot "$STEM.png" -q
if [ "${SKIP_SHAPES:-0}" != 1 ]; then
  "$PY" -m compress bench random:smollm2-135m random:llama3.2-1b random:llama3-8b \
    --prefill 512,2048 --batch 1,8 --json "$STEM-shapes.json" -q
  # int8 / int4 on the Llama-3-8B shape (data-free recipes run on the random weights): the issue's speed targets
  "$PY" -m compress bench random:llama3-8b "${FORMATS[@]}" \
    --prefill 512,2048 --batch 1,8 --json "$STEM-llama3-8b-quant.json" -q
fi
if [ "${SKIP_MODES:-0}" != 1 ]; then
  for MODE in eager graph compile; do
    "$PY" -m compress bench random:smollm2-135m --prefill 512 --batch 1 --decode-mode "$MODE" \
      --json "$STEM-mode-$MODE.json" -q
  done
fi
echo "wrote $STEM.json $STEM.png"
