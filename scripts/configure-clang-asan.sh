#!/usr/bin/env bash
# Configures the clang build with AddressSanitizer + UndefinedBehaviorSanitizer and libFuzzer's
# coverage instrumentation (scripts/fuzz.sh builds its targets there; scripts/sanitize.sh --ci
# builds a subset of the test programs in the same tree, so CI compiles the library once for both).
#   scripts/configure-clang-asan.sh [BUILD_DIR]   (default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
# -O1 -g1: ASan's recommended optimisation with line tables for readable reports; no NDEBUG.
cmake -S . -B "${1:-build-fuzz}" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DLCMD_SANITIZE=address,undefined -DLCMD_FUZZ=ON -DLCMD_BUILD_TESTS=ON > /dev/null
