#!/usr/bin/env bash
# The test command: builds if needed and runs the whole suite (unit, golden parity, CLI).
# Reference data is read from ../shared (override with LCMD_SHARED=/path/to/shared).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || bash scripts/setup.sh
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j 2
