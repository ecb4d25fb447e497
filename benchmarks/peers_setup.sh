#!/usr/bin/env bash
# A separate venv for the peer quantizers that benchmarks/peers_smollm2.py compares against
# (llm-compressor, HQQ, AutoRound). Kept apart from the project's python because the peers pin
# their own transformers / compressed-tensors ranges; none of them is a dependency of compress.
#
#   bash benchmarks/peers_setup.sh [VENV]        # default: /work/peers-venv
#
# torch is pinned to 2.13.0 (on this machine the CPU wheel lies on disk; an unpinned `torch`
# asked for by a peer would pull a multi-GB CUDA build), and the pin is kept as a constraint
# while the peers install so none of them replaces it.
set -euo pipefail

VENV="${1:-/work/peers-venv}"
TORCH="${PEERS_TORCH:-torch==2.13.0}"

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$TORCH"

CONS="$(mktemp)"
trap 'rm -f "$CONS"' EXIT
echo "$TORCH" >"$CONS"
# One resolve for all three peers, so pip picks a transformers every one of them accepts.
"$PY" -m pip install -q -c "$CONS" llmcompressor hqq auto-round transformers safetensors

"$PY" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
for name in ("torch", "transformers", "llmcompressor", "compressed-tensors", "hqq", "auto-round", "safetensors"):
    try:
        print(f"{name:20s} {version(name)}")
    except PackageNotFoundError:
        print(f"{name:20s} missing")
EOF
echo "peers venv ready: $VENV  (run: python benchmarks/peers_smollm2.py --peers-python $VENV/bin/python)"
