#!/usr/bin/env bash
# The GPU runs issue 6 still needs (H100, run from the repository root on the device machine,
# with `export PYTHONPATH=$PWD`). Each block fits one 10-minute call; results land in $OUT.
# FA4 (optional, makes the monolithic reference the fastest kernel): see
# ../shared/gpu/README.md (two calls carrying .fa4a then .fa4b).
set -euo pipefail
OUT=${OUT:-benchmarks/results}
case "${1:-}" in
  tests)  # GPU tests of the streaming executor and the baseline (about 3 minutes)
    python -m pytest -q -m gpu tests/attention/test_streaming_gpu.py tests/attention/test_baseline.py -s \
      2>&1 | tee "$OUT/pytest_gpu_streaming_baseline_h100.log" | tail -20 ;;
  bench)  # streamed forward + baseline at 1M, full and causal (about 4 minutes)
    python benchmarks/bench_attention.py --lengths 1048576 --masks causal full --no-gpu \
      --no-backward --json "$OUT/attention_h100_1m_streamed.json" ;;
  sweep)  # memory scaling at 2..32 GiB, 1M causal (about 3 minutes)
    python benchmarks/bench_memory_scaling.py --json "$OUT/memory_scaling_h100.json" ;;
  headline)  # > 80 GB causal forward and the 10^9-token projection (about 6 minutes)
    python benchmarks/bench_headline.py --json "$OUT/headline_h100.json" ;;
  *) echo "usage: $0 tests|bench|sweep|headline" >&2; exit 2 ;;
esac
