#!/usr/bin/env bash
# Builds the flock addon against the Node-API headers (ABI-stable: one build per CPU serves every
# Node >= 18) into native/prebuilds/linux-<arch>/flock.node, for each CPU the package declares in
# its "cpu" field: with the host's cc, or the Debian cross compiler (scripts/setup installs it).
# A build is skipped while it is newer than flock.c and this script.
set -euo pipefail
cd "$(dirname "$0")"
headers=$(node -p 'require("node-api-headers").include_dir')
declare -A compiler=([x64]=x86_64-linux-gnu-gcc [arm64]=aarch64-linux-gnu-gcc)
host=$(node -p process.arch)
for arch in $(node -p 'require("../package.json").cpu.join(" ")'); do
  out=prebuilds/linux-$arch/flock.node
  if [ "$out" -nt flock.c ] && [ "$out" -nt build.sh ]; then continue; fi
  cc=${compiler[$arch]:?no compiler known for $arch}
  if ! command -v "$cc" >/dev/null; then
    [ "$arch" = "$host" ] && cc=cc || { echo "native/build.sh: $cc is missing (scripts/setup installs it)" >&2; exit 1; }
  fi
  mkdir -p "prebuilds/linux-$arch"
  "$cc" -shared -fPIC -O2 -Wall -Werror -I"$headers" -o "$out.tmp" flock.c
  mv "$out.tmp" "$out"
done
