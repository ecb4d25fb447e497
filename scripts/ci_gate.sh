#!/usr/bin/env bash
# CI regression gate (CPU): re-run SmolLM2 base, int8 (recipes/int8.yaml) and int4 g64
# (recipes/int4-rtn.yaml) with the settings stored in the baseline of this kind of CPU (4 perplexity
# windows of 512, prefill 512 (128 was dropped: int4 at M = 128, just past its kernel crossover,
# moved 1.35–1.80× between runs), 5 rounds of 32 decode steps whose median step is taken, 1 CPU
# thread) and compare: perplexity may rise ≤ 2%, size ratios grow ≤ 1%, and latency may worsen ≤ 20% (a 25% slower
# decode fails) A/B: every entry timed under the code of the commit that last recorded the baseline and under the
# current code, in alternating chunks in one run (`compress regress --reference`; ratios to the fp32 base moved
# 2.3–4.7× for int4 on this shared host, too much to tell a 25% slowdown). Without the git history (a shallow
# checkout) latency falls back to the baseline's stored ratios, with a 40% tolerance that says only "not broken".
# A failed latency check is timed once more and the runs pooled, so one burst of a neighbour's load does not fail CI.
# Exit 1 on a regression. A few minutes on 2 cores. Extra args go to `compress regress`.
# The baseline: benchmarks/baseline-cpu.json on a CPU with bf16 hardware (AVX512-BF16/AMX: packed models
# compute in bf16, base bf16), benchmarks/baseline-cpu-avx2.json without (everything in fp32, base fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p out
baseline=$("${PYTHON:-python3}" -c "from compress.eval.regress import cpu_baseline; from compress.models import cpu_has_bf16; print(cpu_baseline(cpu_has_bf16()))")
latency=()
if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = false ] && ref=$(git log -1 --format=%H -- "$baseline") && [ -n "$ref" ]; then
  latency=(--reference "$ref")
else
  echo "ci_gate: no git history of $baseline here: latency gated by its stored ratios, tolerance 40%" >&2
  latency=(--tol-latency 0.4)
fi
exec "${PYTHON:-python3}" -m compress regress --baseline "$baseline" --device cpu "${latency[@]}" \
  --json out/ci-gate.json -q "$@"
