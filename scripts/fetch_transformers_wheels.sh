#!/usr/bin/env bash
# Wheels of transformers for the GPU machine (Python 3.12, no network there) into the ignored
# folder .tfw/, without the packages that machine already has (numpy, torch's dependencies).
set -euo pipefail
tmp=$(mktemp -d)
pip download -q transformers --python-version 3.12 --only-binary=:all: --platform any \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d "$tmp"
mkdir -p .tfw
find "$tmp" -name '*.whl' | grep -v -E '/(numpy|filelock|fsspec|typing_extensions|packaging|tqdm)-' \
  | xargs -I{} cp {} .tfw/
du -sh .tfw
