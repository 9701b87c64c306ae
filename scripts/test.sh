#!/usr/bin/env bash
# Install the project with its test extras (CPU build of torch first, so pip never pulls a
# multi-GB CUDA build), then run lint and the full CPU test suite. Used by README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[attention,test,plot,transformers]"
ruff check .
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
python -m pytest -q --doctest-modules cqs_design tests "$@"
