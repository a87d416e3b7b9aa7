#!/usr/bin/env bash
# Installs every build and test dependency from Debian packages, then builds lcmd (Release)
# into ./build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake ninja-build pkg-config
          libdnnl-dev nlohmann-json3-dev libpng-dev libutf8proc-dev libgtest-dev
          libcurl4-openssl-dev libcpp-httplib-dev libssl-dev curl nodejs
          clang libclang-rt-14-dev libomp-dev)
# clang + libclang-rt-14-dev (libFuzzer and clang's sanitizer runtimes) + libomp-dev (OpenMP for
# clang) build the fuzz targets (scripts/fuzz.sh); the default build stays on g++.
# npm: Debian packages it apart from nodejs; NodeSource's nodejs already bundles it.
command -v npm > /dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The official openai npm client, which the serve tests drive against `lcmd serve`.
(cd tests/serve/openai_client && npm ci --no-audit --no-fund --loglevel=error)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
echo "built: $(pwd)/build/lcmd"
