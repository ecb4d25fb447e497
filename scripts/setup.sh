#!/usr/bin/env bash
# Install compress and what it needs. Where no torch is installed, take torch 2.13.0 (the CPU build
# lies on the work machines' disk; an open range would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check -e ".[dev]"
