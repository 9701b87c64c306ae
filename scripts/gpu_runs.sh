#!/usr/bin/env bash
# GPU runs of the engine on the lent machine (H100 80GB or H200), from the repository root:
#   call 1 (carry .fa4a):  bash scripts/gpu_runs.sh fa4a
#   call 2 (carry .fa4b):  CQS_COMMIT=$(git rev-parse HEAD) bash scripts/gpu_runs.sh fa4b tests
#   call 3:                CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env bench_short bench_256k
#   call 4:                CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env bench_1m headline bwd2m
#   transformers (carry .tfw, made by scripts/fetch_transformers_wheels.sh): ... tfw transformers
# (tests_a / tests_b split the suite around the FA4 carry when device time is short)
# FA4 travels as wheels in two calls (../shared/gpu/README.md): "fa4a" copies the first half
# (the tests that do not need FA4 run in that call), the next call (within 30 s, while the
# machine is warm) starts with "fa4b", which installs it; later calls on the same warm machine
# need only "fa4env". Every part writes its log or JSON under $OUT (copied back by the device
# tool; at most 8 files) and stops well inside the 10-minute limit of a call; results are
# committed under benchmarks/results/.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
export CQS_CACHE_DIR=/tmp/cqs_cache
gpu_tag() {
  case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) echo h200 ;; *H100*) echo h100 ;; *) echo gpu ;;
  esac
}
tfenv() { export PYTHONPATH=${PYTHONPATH:-}:/tmp/tf; }
fa4env() { export PYTHONPATH=$PWD:/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:${PYTHONPATH:-}; }
fa4() {  # install the carried FA4 wheels (the second call)
  cat /tmp/fa4/part_aa .fa4b/part_ab > "/tmp/fa4/$(cat .fa4b/BIG_WHEEL_NAME)" &&
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .fa4b/*.whl /tmp/fa4/*.whl
  fa4env
  python3 -c "import flash_attn.cute; print('fa4 ok')"
}
for part in "$@"; do
  tag=$(gpu_tag)
  case "$part" in
    fa4a) mkdir -p /tmp/fa4 && cp .fa4a/* /tmp/fa4/ && echo "fa4a copied" ;;
    fa4b) fa4 ;;
    fa4env) fa4env ;;
    tfw)  # transformers and what it needs beyond the machine's packages (carry .tfw, ~31 MB)
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tf .tfw/*.whl &&
      tfenv && python3 -c "import transformers; print('transformers', transformers.__version__)" ;;
    tfenv) tfenv ;;
    transformers)  # the Mistral-style sliding window at an odd length on the GPU
      CQS_GPU_RECORD="$OUT/gpu_test_records_$tag.jsonl" timeout 120 python3 -m pytest -q -m gpu \
        -p no:cacheprovider -rfEs tests/attention/test_masks_gpu.py -k transformers 2>&1 \
        | tee "$OUT/pytest_gpu_${tag}_transformers.log" | tail -5 ;;
    tests_a|tests_b|tests_core|tests)  # the GPU suite: a) without FA4, b) the engine with FA4,
      # core) the mask, engine and kernel-memory tests (one call when device time is short), or all
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu.txt"
      echo "commit ${CQS_COMMIT:-unknown} part $part" >> "$OUT/gpu.txt"
      case "$part" in
        tests_a) files="tests/attention/test_masks_gpu.py tests/attention/test_wrong_answers.py
               tests/attention/test_guardrails.py tests/attention/test_module.py
               tests/attention/test_cli_attention.py tests/attention/test_gpu_kernels.py" ;;
        tests_b) files="tests/attention/test_engine_gpu.py
               tests/attention/test_kernel_memory_gpu.py" ;;
        tests_core) files="tests/attention/test_masks_gpu.py tests/attention/test_engine_gpu.py
               tests/attention/test_kernel_memory_gpu.py" ;;
        *) files="tests/attention/test_engine_gpu.py tests/attention/test_masks_gpu.py
               tests/attention/test_kernel_memory_gpu.py tests/attention/test_wrong_answers.py
               tests/attention/test_guardrails.py tests/attention/test_module.py
               tests/attention/test_cli_attention.py tests/attention/test_gpu_kernels.py" ;;
      esac
      files=${TESTS_FILES:-$files}  # a chosen list (node ids in priority order) overrides
      # shellcheck disable=SC2086
      CQS_GPU_RECORD="$OUT/gpu_test_records_$tag.jsonl" timeout "${TESTS_TIMEOUT:-280}" \
        python3 -m pytest -q -m gpu -p no:cacheprovider -rfEs --durations=10 $files 2>&1 \
        | tee "$OUT/pytest_gpu_${tag}_${part}.log" | tail -30 ;;
    bench_short)  # 16K and 64K at 1/4, FA4 and cuDNN timed (about 100 s)
      timeout 110 python3 benchmarks/bench_attention.py --lengths 16384 65536 \
        --kernels fa4 cudnn --reps 5 --json "$OUT/attention_${tag}_short.json" 2>&1 | tail -8 ;;
    bench_256k)  # 256K full and causal at 1/8, 1/4, 1/2 (about 3 minutes)
      timeout 185 python3 benchmarks/bench_attention.py --lengths 262144 --kernels fa4 \
        --reps 3 --no-baseline --budget-fraction 0.125 0.25 0.5 \
        --json "$OUT/attention_${tag}_256k.json" 2>&1 | tail -8 ;;
    bench_1m)  # 1M causal at 1/4: the fastest monolithic kernel, streamed forward and backward
      timeout 110 python3 benchmarks/bench_attention.py --lengths 1048576 --masks causal \
        --kernels fa4 --no-gpu --no-baseline --budget-fraction 0.25 \
        --json "$OUT/attention_${tag}_1m.json" 2>&1 | tail -6 ;;
    headline)  # 5.5M tokens causal, Q+K+V+O = 90 GB in host memory, 60 GiB budget (~5 min)
      timeout 300 python3 benchmarks/bench_headline.py --json "$OUT/headline_$tag.json" \
        --no-progress 2>&1 | tail -12 ;;
    bwd2m)  # forward + backward at 2M tokens causal, host inputs, budget 1/4 of Q+K+V
      timeout 230 python3 benchmarks/bench_headline.py --seq 2097152 --backward \
        --budget-fraction 0.25 --check-rows 32 --json "$OUT/headline_backward_$tag.json" \
        --no-progress 2>&1 | tail -10 ;;
    *) echo "usage: $0 fa4a|fa4b|fa4env|tfw|tfenv|transformers|tests|tests_a|tests_b|tests_core|bench_short|bench_256k|bench_1m|headline|bwd2m ..." >&2
       exit 2 ;;
  esac
done
