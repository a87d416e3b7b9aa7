#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) into ./build-fuzz and runs each one for
# SECONDS (default 60), starting from its seed corpus in fuzz/corpus/<target>/. Fails on the first
# crash, sanitizer report, leak, timeout (a single input running over 10 s) or out-of-memory; the
# input that did it is left in build-fuzz/artifacts/<target>/ (replay: build-fuzz/fuzz/<target> FILE).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# New inputs the fuzzer finds go to build-fuzz/corpus/<target>/, never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
BUILD_DIR=${LCMD_FUZZ_BUILD_DIR:-build-fuzz}
export LCMD_SHARED=${LCMD_SHARED:-$(cd .. && pwd)/shared}  # fuzz_tokenizer reads the real vocabulary

# Longest input per target: enough for every construct of its format, short enough that the
# fuzzer spends its time on structure rather than on long inputs.
declare -A MAX_LEN=([fuzz_safetensors]=4096 [fuzz_config]=4096 [fuzz_tokenizer]=1024
                    [fuzz_request]=4096 [fuzz_lambda_event]=8192 [fuzz_packed_model]=65536)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_request fuzz_lambda_event fuzz_packed_model)

bash scripts/configure-clang-asan.sh "$BUILD_DIR"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${TARGETS[@]}"

export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
for target in "${TARGETS[@]}"; do
  [ -n "${MAX_LEN[$target]:-}" ] || { echo "unknown fuzz target: $target" >&2; exit 2; }
  work="$BUILD_DIR/corpus/$target" artifacts="$BUILD_DIR/artifacts/$target/"
  mkdir -p "$work" "$artifacts"
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=(-dict="fuzz/dict/$target.dict")
  echo "== $target: ${SECONDS_PER_TARGET}s"
  if ! "$BUILD_DIR/fuzz/$target" -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$target]}" \
      -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1 "${dict[@]}" \
      -artifact_prefix="$artifacts" "$work" "fuzz/corpus/$target" > "$BUILD_DIR/$target.log" 2>&1; then
    tail -n 60 "$BUILD_DIR/$target.log"
    echo "FAIL: $target; reproducer(s): $(ls "$artifacts" | sed "s|^|$artifacts|" | tr '\n' ' ')" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$BUILD_DIR/$target.log" | tr '\n' ' '
  echo
done
echo "fuzzing passed: ${TARGETS[*]}"
