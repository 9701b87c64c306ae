#!/usr/bin/env bash
# GPU runs of the engine on the lent machine (H100 80GB or H200), from the repository root:
#   call 1 (carry .fa4a):  bash scripts/gpu_runs.sh fa4a
#   call 2 (carry .fa4b):  CQS_COMMIT=$(git rev-parse HEAD) bash scripts/gpu_runs.sh fa4b tests
#   call 3:                CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env bench_short bench_256k
#   call 4:                CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env bench_1m headline bwd2m
#   transformers (carry .tfw, made by scripts/fetch_transformers_wheels.sh): ... tfw transformers
# When machine starts are scarce (2026-12-07 and -08: every start failed), one call without FA4
# runs the whole GPU suite, crash cases first, with transformers for the Mistral test:
#   (carry .tfw) export OUT CQS_COMMIT=... TESTS_TIMEOUT=530 TESTS_FILES="tests/attention/test_masks_gpu.py
#     tests/attention/test_engine_gpu.py tests/attention/test_kernel_memory_gpu.py ..."; \
#     bash scripts/gpu_runs.sh tfw tests
# Issue 21's budget sweep (ratio to FA4 and to the host-link bound, 1/16 ... 1 of Q+K+V, forward
# and backward; every record has ratio_to_bound), each line one call of at most 10 minutes, in
# priority order; the estimates are from the H100 times in docs/performance.md and issue 21
# (FA4 at 256K: 0.85 / 2.3 s fwd / bwd full, 0.41 / 1.1 s causal; 1M causal fwd 6.9 s; the
# streamed ratios of issue 21, halved for the unmeasured 1/16) and include FA4's compile:
#   CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env sweep_256k_full sweep_256k_causal  # ~4 min
#   CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env sweep_1m_causal_a                  # ~4.5 min
#   CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env sweep_1m_causal_b bench_short      # ~4.5 min
#   CQS_COMMIT=... bash scripts/gpu_runs.sh fa4env sweep_1m_full                      # ~4 min
# (about 17 minutes of device time in all; each part's timeout is its estimate + 50-100%, and
# the JSON is rewritten after every measured part, so a part cut short keeps what it measured).
# The plot for docs/performance.md, from the files these write (runs anywhere):
#   python benchmarks/plot_budget_ratio.py benchmarks/results/budget_ratio_h100.png \
#     benchmarks/results/attention_h100_sweep_*.json --lengths 262144 1048576
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
    sweep_256k_full|sweep_256k_causal)  # 256K at 1/16 1/8 1/4 1/2 1: FA4, on GPU, streamed,
      # baseline, streamed backward (full ~150 s: 1/16's backward ~40 s of it; causal ~90 s)
      mask=${part#sweep_256k_}
      timeout "$([ "$mask" = full ] && echo 300 || echo 240)" python3 benchmarks/bench_attention.py \
        --lengths 262144 --masks "$mask" --kernels fa4 --reps 3 \
        --budget-fraction 1/16 1/8 1/4 1/2 1 \
        --json "$OUT/attention_${tag}_sweep_256k_$mask.json" 2>&1 | tail -9 ;;
    sweep_1m_causal_a|sweep_1m_causal_b)  # 1M causal, a) 1/16 1/8 1/4 (~270 s), b) 1/2 1
      # (~170 s): FA4 fwd and bwd, streamed fwd (warm-up + 1) and bwd (1 run); no on-GPU run
      # and no baseline (the issue's 1M targets are streamed)
      if [ "$part" = sweep_1m_causal_a ]; then fr="1/16 1/8 1/4"; lim=420; else fr="1/2 1"; lim=280; fi
      # shellcheck disable=SC2086
      timeout "$lim" python3 benchmarks/bench_attention.py --lengths 1048576 --masks causal \
        --kernels fa4 --no-gpu --no-baseline --budget-fraction $fr \
        --json "$OUT/attention_${tag}_sweep_1m_causal_${part#sweep_1m_causal_}.json" 2>&1 | tail -7 ;;
    sweep_1m_full)  # 1M full at 1/4 (~240 s: FA4 fwd 14 s, bwd ~36 s; streamed bwd ~70 s)
      timeout 420 python3 benchmarks/bench_attention.py --lengths 1048576 --masks full \
        --kernels fa4 --no-gpu --no-baseline --budget-fraction 1/4 \
        --json "$OUT/attention_${tag}_sweep_1m_full.json" 2>&1 | tail -5 ;;
    headline)  # 5.5M tokens causal, Q+K+V+O = 90 GB in host memory, 60 GiB budget (~5 min)
      timeout 300 python3 benchmarks/bench_headline.py --json "$OUT/headline_$tag.json" \
        --no-progress 2>&1 | tail -12 ;;
    bwd2m)  # forward + backward at 2M tokens causal, host inputs, budget 1/4 of Q+K+V
      timeout 230 python3 benchmarks/bench_headline.py --seq 2097152 --backward \
        --budget-fraction 0.25 --check-rows 32 --json "$OUT/headline_backward_$tag.json" \
        --no-progress 2>&1 | tail -10 ;;
    *) echo "usage: $0 fa4a|fa4b|fa4env|tfw|tfenv|transformers|tests|tests_a|tests_b|tests_core|bench_short|bench_256k|bench_1m|sweep_256k_full|sweep_256k_causal|sweep_1m_causal_a|sweep_1m_causal_b|sweep_1m_full|headline|bwd2m ..." >&2
       exit 2 ;;
  esac
done
