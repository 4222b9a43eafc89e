#!/usr/bin/env bash
# Builds native/build/flock.node against the Node-API headers (ABI-stable: one build serves every
# Node >= 18 and Bun). Skips the compile when the addon is newer than its source.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
if [ build/flock.node -nt flock.c ]; then exit 0; fi
headers=$(node -p 'require("node-api-headers").include_dir')
cc -shared -fPIC -O2 -Wall -Werror -I"$headers" -o build/flock.node.tmp flock.c
mv build/flock.node.tmp build/flock.node
