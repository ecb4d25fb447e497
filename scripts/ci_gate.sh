#!/usr/bin/env bash
# CI regression gate (CPU): re-run SmolLM2 base, int8 (recipes/int8.yaml) and int4 g64
# (recipes/int4-rtn.yaml) with the settings stored in the baseline of this kind of CPU (4 perplexity
# windows of 512, prefill 512 (128 was dropped: int4 at M = 128, just past its kernel crossover,
# moved 1.35–1.80× between runs), 5 rounds of 32 decode steps whose median step is taken, 1 CPU
# thread) and compare: perplexity may rise ≤ 2%, latency
# ratios to the base measured in this run may worsen ≤ 20% (a 25% slower decode fails; a failed latency check is
# timed once more and the better run gated, so one burst of a neighbour's load does not fail CI), size ratios grow ≤ 1%.
# Exit 1 on a regression. A few minutes on 2 cores. Extra args go to `compress regress`.
# The baseline: benchmarks/baseline-cpu.json on a CPU with bf16 hardware (AVX512-BF16/AMX: packed models
# compute in bf16, base bf16), benchmarks/baseline-cpu-avx2.json without (everything in fp32, base fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p out
baseline=$("${PYTHON:-python3}" -c "from compress.eval.regress import cpu_baseline; from compress.models import cpu_has_bf16; print(cpu_baseline(cpu_has_bf16()))")
exec "${PYTHON:-python3}" -m compress regress --baseline "$baseline" --device cpu \
  --json out/ci-gate.json -q "$@"
