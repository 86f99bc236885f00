#!/usr/bin/env bash
# Create (or reuse) a Python venv at DIR with the dlt version the peer benchmark was measured with.
# Usage: benches/peer/setup.sh DIR        -> prints DIR/bin/python on stdout (logs on stderr)
# Idempotent: if DIR already has dlt at the pinned version, it only prints the path (~1 s).
set -euo pipefail

DLT_VERSION=1.31.0          # measured with dlt 1.31.0 (pulls pyarrow 26.0.1 at the time of writing)
PYTHON=${PYTHON:-python3}   # measured with CPython 3.11.7

dir=${1:?usage: setup.sh DIR}
py="$dir/bin/python"

if [ -x "$py" ] && "$py" - "$DLT_VERSION" <<'EOF' 2>/dev/null
import sys, importlib.metadata as md
sys.exit(0 if md.version("dlt") == sys.argv[1] and md.version("pyarrow") else 1)
EOF
then
    echo "setup.sh: $dir already has dlt $DLT_VERSION" >&2
else
    echo "setup.sh: installing dlt[parquet]==$DLT_VERSION into $dir (about 40 s)" >&2
    "$PYTHON" -m venv "$dir"
    "$py" -m pip install --quiet --disable-pip-version-check "dlt[parquet]==$DLT_VERSION" >&2
fi
"$py" -c 'import dlt, pyarrow, sys; print(f"setup.sh: dlt {dlt.__version__}, pyarrow {pyarrow.__version__}, python {sys.version.split()[0]}", file=sys.stderr)'
echo "$py"
