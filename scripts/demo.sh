#!/usr/bin/env bash
# Set up, then run the demo: fetch SmolLM2-135M, compress it, print before/after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec compress demo "$@"
