#!/bin/sh
# Assembles the files the Lambda image runs into ROOT, as the Dockerfile's final stage gets them:
#   ROOT/var/runtime/bootstrap   the entry point Lambda starts
#   ROOT/opt/lcmd/bin/lcmd       the binary
#   ROOT/opt/lcmd/lib/           every shared library it loads (its `ldd` closure, glibc and the
#                                dynamic loader included: Amazon Linux 2023's are older than the
#                                builder's, so lcmd runs with the ones it was linked against)
#   ROOT/opt/sd_model            the packed model (`lcmd pack`)
# The Dockerfile runs this in its builder stage; tests/serve/bootstrap_tree_test.cpp runs it into a
# temporary directory and serves a request through the result, proving the image's contents are
# complete without Docker.
#
# usage: assemble-rootfs.sh LCMD_BINARY PACKED_MODEL ROOT
set -eu
if [ $# -ne 3 ]; then
  echo "usage: $0 LCMD_BINARY PACKED_MODEL ROOT" >&2
  exit 2
fi
binary=$1 model=$2 root=$3
[ -x "$binary" ] || { echo "$0: $binary is not an executable" >&2; exit 2; }
[ -f "$model" ] || { echo "$0: $model is not a packed model file (lcmd pack)" >&2; exit 2; }

mkdir -p "$root/opt/lcmd/bin" "$root/opt/lcmd/lib" "$root/var/runtime"
cp "$binary" "$root/opt/lcmd/bin/lcmd"
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' |
  while read -r lib; do cp -L "$lib" "$root/opt/lcmd/lib/"; done
loader=$(ls "$root/opt/lcmd/lib/" | grep '^ld-linux' | head -n 1)
[ -n "$loader" ] || { echo "$0: no dynamic loader in the ldd closure of $binary" >&2; exit 1; }

# The bootstrap finds the tree relative to itself, so the same file runs at / in the image and
# under a test's temporary root.
cat > "$root/var/runtime/bootstrap" <<SCRIPT
#!/bin/sh
# The Lambda runtime entry point: lcmd with its own glibc (see deploy/lambda/assemble-rootfs.sh).
root=\$(cd "\$(dirname "\$0")/../.." && pwd)
exec "\$root/opt/lcmd/lib/$loader" --library-path "\$root/opt/lcmd/lib" "\$root/opt/lcmd/bin/lcmd" "\$@"
SCRIPT
chmod 755 "$root/var/runtime/bootstrap"

cp "$model" "$root/opt/sd_model"
"$root/var/runtime/bootstrap" --help > /dev/null
