#!/usr/bin/env bash
# setup.sh DIR — create DIR/venv with the pinned hubspot-api-client (Apache-2.0)
# and print the python to run validate.py with. Idempotent: a re-run with the
# right version installed does no network access and takes well under a second.
set -euo pipefail
HUBSPOT_API_CLIENT_VERSION=12.0.0
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
VENV="$DIR/venv"
PY="$VENV/bin/python"

ok() {
  [ -x "$PY" ] && "$PY" - "$HUBSPOT_API_CLIENT_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("hubspot-api-client") == sys.argv[1]
import hubspot.crm.contacts, hubspot.crm.objects.communications  # noqa: F401
PYEOF
}

if ! ok; then
  BASE="${HUBSPOT_VALIDATE_BASE_PYTHON:-python3}"
  "$BASE" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' ||
    { echo "need python3 >= 3.8 (got $("$BASE" --version 2>&1))" >&2; exit 1; }
  if command -v flock >/dev/null 2>&1; then exec 9>"$DIR/.setup.lock"; flock 9; fi
  if ! ok; then
    echo "[hubspot_validate setup] installing hubspot-api-client==$HUBSPOT_API_CLIENT_VERSION into $VENV" >&2
    rm -rf "$VENV"
    "$BASE" -m venv "$VENV"
    "$PY" -m pip install --disable-pip-version-check -q "hubspot-api-client==$HUBSPOT_API_CLIENT_VERSION"
    ok || { echo "hubspot-api-client import check failed" >&2; exit 1; }
  fi
fi
echo "$PY"
