#!/usr/bin/env bash
# Regenerate the lock files from base.txt/test.txt with uv (`pip install uv`; it reads PyPI, not the disk):
#   lock-cpu.txt   what `make setup` (and so CI) installs after torch: the CPU build of torch is installed
#                  first from its own wheel, so it is left out here (constraints.txt pins its version)
#   lock-cuda.txt  what the Docker image installs: torch 2.13.0 from PyPI (a CUDA 13 build) and its
#                  nvidia-* libraries included
set -euo pipefail
cd "$(dirname "$0")"
PLATFORM=(--python-version 3.11 --python-platform x86_64-manylinux_2_28)
uv pip compile base.txt test.txt -c torch-cpu.txt "${PLATFORM[@]}" --find-links /opt/wheels --no-emit-find-links \
    --no-emit-package torch -o lock-cpu.txt
uv pip compile base.txt -c constraints.txt "${PLATFORM[@]}" --index-url https://pypi.org/simple \
    --no-emit-index-url -o lock-cuda.txt
