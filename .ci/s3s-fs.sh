#!/usr/bin/env bash
# Installs the S3-compatible test server s3s-fs 0.14.1 (crates.io, Apache-2.0; it enforces
# SigV4 and conditional create) under DIR (default target/s3s), once: CI keeps it under target/.
# Prints the binary's path.
set -euo pipefail
dir=${1:-target/s3s}
bin="$dir/bin/s3s-fs"
if [ ! -x "$bin" ]; then
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$dir" >&2
fi
echo "$(cd "$(dirname "$bin")" && pwd)/s3s-fs"
