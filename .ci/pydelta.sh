#!/usr/bin/env bash
# Creates DIR (default target/pyvenv), a Python venv with deltalake 1.6.6 and pyarrow: the
# independent reader the object-storage tests check Delta tables with. Idempotent; prints the
# venv's python.
set -euo pipefail
DELTALAKE_VERSION=1.6.6
dir=${1:-target/pyvenv}
py="$dir/bin/python"
ok() { [ -x "$py" ] && "$py" -c "import deltalake, pyarrow; assert deltalake.__version__ == '$DELTALAKE_VERSION'" >/dev/null 2>&1; }
if ! ok; then
  echo "[pydelta] installing deltalake==$DELTALAKE_VERSION and pyarrow into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$py" -m pip install --disable-pip-version-check -q "deltalake==$DELTALAKE_VERSION" pyarrow
  ok || { echo "deltalake import check failed" >&2; exit 1; }
fi
echo "$(cd "$dir" && pwd)/bin/python"
