#!/usr/bin/env bash
# Install the project with its test extras, then run lint and the full CPU test suite. Used by
# README.md (its second command) and .ci/run.
#
# torch: an installed torch is kept (e.g. a GPU machine's CUDA build). Otherwise the CPU build
# of torch 2.13.0 comes from the PyTorch CPU wheel index, the way pytorch.org documents it
# (`pip install torch --index-url https://download.pytorch.org/whl/cpu`), so pip never pulls
# the multi-GB CUDA build from PyPI. TORCH_INDEX_URL picks another index ("" = pip's own
# configuration). Where the index cannot be reached (a machine that has only PyPI and a local
# CPU wheel, like the project's dev machine), pip's configured sources are used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
    index="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
    if [ -n "$index" ] && ! python -c "import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=20)" "$index" 2>/dev/null
    then
        echo "scripts/test.sh: $index cannot be reached; installing torch from pip's" \
             "configured sources" >&2
        index=""
    fi
    python -m pip install -q "torch==2.13.0" ${index:+--index-url "$index"}
fi
python -m pip install -q -e ".[attention,test,plot,transformers]"
ruff check .
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
python -m pytest -q --doctest-modules cqs_design tests "$@"
