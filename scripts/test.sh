#!/usr/bin/env bash
# Set up, then run the whole test suite (unit tests on tiny models + end-to-end on SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -q "$@"
