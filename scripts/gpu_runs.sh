#!/usr/bin/env bash
# GPU runs of the execution engine (issue 12/13) on the lent H200, from the repository root.
# FA4 travels as wheels in two calls (../shared/gpu/README.md): call 1 `fa4a` copies the first
# half, the next call (within 30 s) starts with `fa4b`, which installs it, then runs its part.
# Results and logs land in $OUT (copied back by the device tool) and are committed under
# benchmarks/results/.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
fa4() {  # install the carried FA4 wheels (the second call)
  cat /tmp/fa4/part_aa .fa4b/part_ab > "/tmp/fa4/$(cat .fa4b/BIG_WHEEL_NAME)" &&
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .fa4b/*.whl /tmp/fa4/*.whl &&
  export PYTHONPATH=$PWD:/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:${PYTHONPATH:-}
  python3 -c "import flash_attn.cute; print('fa4 ok')"
}
for part in "$@"; do
  case "$part" in
    fa4a) mkdir -p /tmp/fa4 && cp .fa4a/* /tmp/fa4/ && echo "fa4a copied" ;;
    fa4b) fa4 ;;
    tests)  # GPU tests: engine, kernels, module/CLI (about 4 minutes)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
      python3 -m pytest -q -m gpu -p no:cacheprovider tests/attention -x -s 2>&1 \
        | tee "$OUT/pytest_gpu_engine_h200.log" | tail -25 ;;
    quick)  # 16K and 64K: on-GPU, backward, streamed at 1/4, baseline (about 2 minutes)
      python3 benchmarks/bench_attention.py --lengths 16384 65536 --kernels fa4 cudnn \
        --reps 5 --json "$OUT/attention_h200_engine_short.json" 2>&1 | tail -12 ;;
    bench256)  # 256K full and causal, budgets 1/8, 1/4, 1/2 (about 4 minutes)
      python3 benchmarks/bench_attention.py --lengths 262144 --kernels fa4 cudnn --reps 3 \
        --budget-fraction 0.25 0.125 0.5 --json "$OUT/attention_h200_engine_256k.json" \
        2>&1 | tail -12 ;;
    bench1m)  # 1M causal and full, budget 1/4 (about 8 minutes)
      python3 benchmarks/bench_attention.py --lengths 1048576 --masks causal full \
        --kernels fa4 cudnn --budget-fraction 0.25 \
        --json "$OUT/attention_h200_engine_1m.json" 2>&1 | tail -12 ;;
    *) echo "usage: $0 fa4a|fa4b|tests|quick|bench256|bench1m ..." >&2; exit 2 ;;
  esac
done
