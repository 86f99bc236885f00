#!/usr/bin/env bash
# setup.sh DIR — prepare a local BottleCRM (PyPI django-crm 1.35.0) test server
# in DIR: a Python 3.12 venv, the SQLite settings module, and a pristine
# template database holding an admin user, an org and a personal access token.
#
# Idempotent: a re-run reuses the venv and the template (about 1 s) unless the
# pinned version or the settings changed.
#
# Exit codes: 0 ok, 3 SKIPPED (no Python 3.12 on this machine), other = error.
# Writes DIR/env (sourceable):
#   BOTTLECRM_PYTHON=DIR/venv/bin/python   BOTTLECRM_VENV=DIR/venv
#   BOTTLECRM_TOKEN_FILE=DIR/pat.txt       (the token itself only in pat.txt, mode 600)
set -euo pipefail

DJANGO_CRM_VERSION=1.35.0
GUNICORN_VERSION=27.0.1   # has --no-control-socket, which start.sh uses
SCHEMA_METHOD=syncdb   # tables from the models (6 s) instead of 253 migrations (160 s); see README

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"

log() { printf '[bottlecrm setup %ss] %s\n' "$SECONDS" "$*"; }

# --- one setup at a time per DIR ------------------------------------------
if command -v flock >/dev/null 2>&1 && [ -z "${BOTTLECRM_SETUP_LOCKED:-}" ]; then
  exec 9>"$DIR/.setup.lock"
  flock 9
  export BOTTLECRM_SETUP_LOCKED=1
fi

# --- find a Python 3.12 -----------------------------------------------------
is_py312() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
  local c
  if [ -n "${BOTTLECRM_BASE_PYTHON:-}" ] && is_py312 "$BOTTLECRM_BASE_PYTHON"; then
    echo "$BOTTLECRM_BASE_PYTHON"; return 0
  fi
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 \
           /root/.pyenv/versions/3.12.*/bin/python3.12; do
    if [ -x "$c" ] && is_py312 "$c"; then echo "$c"; return 0; fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    c="$(PYENV_VERSION=3.12 pyenv which python3.12 2>/dev/null || true)"
    if [ -n "$c" ] && is_py312 "$c"; then echo "$c"; return 0; fi
  fi
  for c in python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && is_py312 "$(command -v "$c")"; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

VENV="$DIR/venv"
PY="$VENV/bin/python"

venv_ok() {
  [ -x "$PY" ] && "$PY" - "$DJANGO_CRM_VERSION" "$GUNICORN_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert sys.version_info[:2] == (3, 12)
assert version("django-crm") == sys.argv[1], version("django-crm")
assert version("gunicorn") == sys.argv[2], version("gunicorn")
import gunicorn, crm.settings  # noqa: F401  (crm.settings needs no env to import)
PYEOF
}

if venv_ok; then
  log "venv ok: $VENV (django-crm $DJANGO_CRM_VERSION)"
else
  if ! BASE_PY="$(find_python)"; then
    echo "================================================================" >&2
    echo "SKIPPED: BottleCRM needs Python 3.12 (pyenv 3.12.x not found)" >&2
    echo "  looked in \${PYENV_ROOT:-~/.pyenv}/versions/3.12.*, pyenv, python3.12 on PATH" >&2
    echo "  (set BOTTLECRM_BASE_PYTHON=/path/to/python3.12 to point at one)" >&2
    echo "================================================================" >&2
    echo "SKIPPED: BottleCRM needs Python 3.12 (pyenv 3.12.x not found)"
    exit 3
  fi
  log "creating venv with $BASE_PY"
  rm -rf "$VENV"
  "$BASE_PY" -m venv "$VENV"
  log "pip install django-crm==$DJANGO_CRM_VERSION gunicorn (about 80-110 s cold)"
  "$PY" -m pip install --disable-pip-version-check -q \
    "django-crm==$DJANGO_CRM_VERSION" "gunicorn==$GUNICORN_VERSION"
  venv_ok || { echo "venv check failed after install" >&2; exit 1; }
  log "venv ready"
fi

# --- settings module ----------------------------------------------------------
mkdir -p "$DIR/settings" "$DIR/media" "$DIR/static"
cmp -s "$HERE/bcrm_settings.py" "$DIR/settings/bcrm_settings.py" 2>/dev/null ||
  cp "$HERE/bcrm_settings.py" "$DIR/settings/bcrm_settings.py"

export PYTHONPATH="$DIR/settings"
export DJANGO_SETTINGS_MODULE=bcrm_settings
export BOTTLECRM_DIR="$DIR"
export SECRET_KEY="engati-etl-bottlecrm-test-secret-key-0123456789abcdef"
export ENV_TYPE=dev
export PYTHONDONTWRITEBYTECODE=1

# --- template database (schema + admin + org + token) -------------------------
STAMP="django-crm=$DJANGO_CRM_VERSION schema=$SCHEMA_METHOD settings=$(sha256sum "$HERE/bcrm_settings.py" | cut -c1-16) bootstrap=$(sha256sum "$HERE/setup.sh" | cut -c1-16)"
TEMPLATE="$DIR/template.sqlite3"
if [ -s "$TEMPLATE" ] && [ -s "$DIR/pat.txt" ] && [ "$(cat "$DIR/template.stamp" 2>/dev/null)" = "$STAMP" ]; then
  log "template db ok: $TEMPLATE"
else
  log "building template db ($SCHEMA_METHOD)"
  TMPDB="$DIR/template.building.sqlite3"
  rm -f "$TMPDB" "$TMPDB-journal" "$TMPDB-wal" "$TMPDB-shm" "$DIR/template.stamp"
  if [ "$SCHEMA_METHOD" = syncdb ]; then
    BOTTLECRM_DB="$TMPDB" BOTTLECRM_NO_MIGRATIONS=1 \
      "$VENV/bin/django-admin" migrate --run-syncdb --noinput >"$DIR/schema.log" 2>&1 ||
      { tail -30 "$DIR/schema.log" >&2; exit 1; }
  else
    BOTTLECRM_DB="$TMPDB" "$VENV/bin/django-admin" migrate --noinput >"$DIR/schema.log" 2>&1 ||
      { tail -30 "$DIR/schema.log" >&2; exit 1; }
  fi
  log "schema built; creating admin user, org, profile, token"
  umask 077
  BOTTLECRM_DB="$TMPDB" "$VENV/bin/django-admin" shell -c '
import os
from common.models import User, Org, Profile, PersonalAccessToken
u = User.objects.create_superuser(email="admin@example.com", password="admin-pass-123")
org = Org.objects.create(name="Engati ETL Test Org")
p = Profile.objects.create(user=u, org=org, role="ADMIN", is_active=True)
raw, pat = PersonalAccessToken.generate(p, "engati-etl-tests")
d = os.environ["BOTTLECRM_DIR"]
with open(os.path.join(d, "pat.txt.new"), "w") as f:
    f.write(raw)
print("org", org.id, "profile", p.id, "token prefix", pat.token_prefix)
' >>"$DIR/schema.log" 2>&1 || { tail -30 "$DIR/schema.log" >&2; exit 1; }
  umask 022
  chmod 600 "$DIR/pat.txt.new"
  mv -f "$DIR/pat.txt.new" "$DIR/pat.txt"
  mv -f "$TMPDB" "$TEMPLATE"
  echo "$STAMP" >"$DIR/template.stamp"
  # A db copied from an older template would not accept the new token.
  rm -f "$DIR/db.sqlite3"
  log "template db ready"
fi
chmod 600 "$DIR/pat.txt"

cat >"$DIR/env" <<ENVEOF
BOTTLECRM_PYTHON=$PY
BOTTLECRM_VENV=$VENV
BOTTLECRM_TOKEN_FILE=$DIR/pat.txt
ENVEOF
log "done; wrote $DIR/env"
cat "$DIR/env"
