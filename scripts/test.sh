#!/usr/bin/env bash
# Install the project with its test extras, then run lint and the full CPU test suite. Used by
# README.md (its second command) and .ci/run.
#
# Installing is scripts/install.sh's job (torch's CPU build from the PyTorch CPU index, or from
# pip's configured sources where that index cannot be reached; an installed torch is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh attention,test,plot,transformers
ruff check .
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
python -m pytest -q --doctest-modules cqs_design tests "$@"
