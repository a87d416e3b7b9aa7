#!/usr/bin/env bash
# Builds with AddressSanitizer + UndefinedBehaviorSanitizer into ./build-asan and runs the ctest
# suite under them: any ASan report (bad access, use after free, leak) or UBSan report fails it.
#   scripts/sanitize.sh [--ci] [extra ctest args...]
# Without --ci: every test program, except (measured on the 2-core machine, -j2):
#   FullSize.*        tests/pipeline/full_size_test.cpp writes and runs the 4 GB full-size random
#                     model: ~65 s normally, many minutes and ~6 GB more under ASan.
#   HttpServeLoad.*   asserts that RSS stays flat under load; ASan's quarantine keeps freed memory,
#                     so the number it measures means nothing here.
# --ci (what .ci/run uses, after scripts/fuzz.sh): only the programs of the parsers, files and
# hand-written kernels -- core, io, text, image, sched, ops -- built in the clang ASan + UBSan tree
# the fuzzers were built in (build-fuzz, so the library is compiled once for both). The whole suite
# under ASan passes but takes 11 min on the quiet 2-core machine (clang tree: 651 tests, pipeline
# 409 s and serve 716 s of test time, the two 1000-request soaks ~220 s each), which with the Release
# suite would double CI's time. Run the whole suite (plain `scripts/sanitize.sh`, a g++ tree in
# build-asan) by hand before a release.
# oneDNN, libgomp and the other system libraries are not instrumented; reports that are theirs and
# not ours would be suppressed, each with its reason, in scripts/sanitizer/*.supp (none needed so far).
set -euo pipefail
cd "$(dirname "$0")/.."
CI_PROGRAMS=(core io text image sched ops)
ci=0
if [ "${1:-}" = "--ci" ]; then ci=1; shift; fi
ctest_filter=(-E '^(FullSize|HttpServeLoad)\.')
if ((ci)); then
  BUILD_DIR=${LCMD_FUZZ_BUILD_DIR:-build-fuzz}
  bash scripts/configure-clang-asan.sh "$BUILD_DIR"
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${CI_PROGRAMS[@]/#/test_}"
  ctest_filter+=(-L "^($(IFS='|'; echo "${CI_PROGRAMS[*]}"))\$")
else
  # -O1 -g1: ASan's recommended optimisation with line tables for readable reports; no NDEBUG.
  BUILD_DIR=${LCMD_ASAN_BUILD_DIR:-build-asan}
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DLCMD_SANITIZE=address,undefined > /dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)"
fi

supp="$(pwd)/scripts/sanitizer"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0:suppressions=$supp/asan.supp"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2 "${ctest_filter[@]}" "$@"
