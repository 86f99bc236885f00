#!/usr/bin/env bash
# airflow.sh DIR — a venv in DIR/venv with apache-airflow (Apache-2.0), used to import
# deploy/airflow/engati_etl_dag.py with Airflow's DagBag; prints the python. A cold install took
# 199 s on the 2-core development machine (124 s with a warm pip cache); a re-run with it
# installed does no network access.
set -euo pipefail
AIRFLOW_VERSION=3.1.8
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PY="$DIR/venv/bin/python"
ok() {
  [ -x "$PY" ] && "$PY" - "$AIRFLOW_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("apache-airflow") == sys.argv[1]
PYEOF
}
if ! ok; then
  echo "[ops setup] installing apache-airflow==$AIRFLOW_VERSION into $DIR/venv" >&2
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  "$PY" -m pip install --disable-pip-version-check -q "apache-airflow==$AIRFLOW_VERSION"
  ok || { echo "apache-airflow import check failed" >&2; exit 1; }
fi
echo "$PY"
