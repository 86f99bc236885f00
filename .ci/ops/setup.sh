#!/usr/bin/env bash
# setup.sh DIR — a venv in DIR/venv with Python's prometheus_client (Apache-2.0), used by the
# metrics-file test to parse what engati-etl writes with Prometheus' own Python parsers; prints
# the python to run parse_metrics.py with. Idempotent: a re-run with the right version installed
# does no network access.
set -euo pipefail
PROMETHEUS_CLIENT_VERSION=0.26.0
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PY="$DIR/venv/bin/python"
ok() {
  [ -x "$PY" ] && "$PY" - "$PROMETHEUS_CLIENT_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("prometheus_client") == sys.argv[1]
import prometheus_client.parser, prometheus_client.openmetrics.parser  # noqa: F401
PYEOF
}
if ! ok; then
  echo "[ops setup] installing prometheus_client==$PROMETHEUS_CLIENT_VERSION into $DIR/venv" >&2
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  "$PY" -m pip install --disable-pip-version-check -q "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
  ok || { echo "prometheus_client import check failed" >&2; exit 1; }
fi
echo "$PY"
