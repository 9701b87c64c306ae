#!/usr/bin/env bash
# Install this project (editable) with the given extras into the current Python environment,
# torch first. Used by README.md (its first command) and scripts/test.sh (its second).
#
#   bash scripts/install.sh                     # the attention extra: what `cqs-attention demo` needs
#   bash scripts/install.sh attention,test      # other extras, comma-separated
#
# torch: an installed torch is kept (e.g. a GPU machine's CUDA build). Otherwise the CPU build
# of torch 2.13.0 comes from the PyTorch CPU wheel index, the way pytorch.org documents it
# (`pip install torch --index-url https://download.pytorch.org/whl/cpu`), so pip never pulls
# the multi-GB CUDA build from PyPI. The index is probed once, with a short timeout
# (TORCH_INDEX_TIMEOUT seconds, default 10); where it cannot be reached (a machine whose pip
# reaches only PyPI or a local wheel directory), one line says so and torch comes from pip's
# configured sources instead, with no wall of retries. TORCH_INDEX_URL picks another index
# ("" = pip's own configuration).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-attention}"
if ! python -c "import torch" 2>/dev/null; then
    index="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
    if [ -n "$index" ] && ! python -c "import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=float(sys.argv[2]))" \
            "$index" "${TORCH_INDEX_TIMEOUT:-10}" 2>/dev/null
    then
        echo "scripts/install.sh: $index cannot be reached; installing torch from pip's" \
             "configured sources" >&2
        index=""
    fi
    python -m pip install -q "torch==2.13.0" ${index:+--index-url "$index"}
fi
python -m pip install -q -e ".[$extras]"
