#!/usr/bin/env bash
# start.sh DIR PORT [--fresh] — start the BottleCRM test server prepared by
# setup.sh DIR: gunicorn (1 sync worker) on 127.0.0.1:PORT, in the background.
#
#   --fresh   start from a copy of the pristine template db (no contacts, no
#             interactions; the token in DIR/pat.txt still works). Without it
#             the previous DIR/db.sqlite3 is reused (created from the template
#             if missing).
#
# Runtime files go to $BOTTLECRM_STATE_DIR (default DIR): server.pid,
# server.log (gunicorn + access log), db.sqlite3, django.log. Give each
# concurrently running server its own BOTTLECRM_STATE_DIR (and port), and stop
# it with `stop.sh <that state dir>`.
#
# Waits until GET /healthz/ answers 200 (at most 60 s), then prints
#   BOTTLECRM_URL=http://127.0.0.1:PORT
# Exit codes: 0 up, 1 failed (log tail on stderr), 2 usage, 3 setup missing.
set -euo pipefail

usage() { echo "usage: $0 DIR PORT [--fresh]" >&2; exit 2; }
[ $# -ge 2 ] || usage
DIR="$(cd "$1" 2>/dev/null && pwd)" || { echo "no such dir: $1 (run setup.sh first)" >&2; exit 3; }
PORT="$2"; shift 2
FRESH=0
for a in "$@"; do
  case "$a" in
    --fresh) FRESH=1 ;;
    *) usage ;;
  esac
done
case "$PORT" in ''|*[!0-9]*) usage ;; esac

VENV="$DIR/venv"
PY="$VENV/bin/python"
TEMPLATE="$DIR/template.sqlite3"
if [ ! -x "$VENV/bin/gunicorn" ] || [ ! -s "$TEMPLATE" ] || [ ! -f "$DIR/settings/bcrm_settings.py" ]; then
  echo "BottleCRM is not set up in $DIR: run .ci/bottlecrm/setup.sh $DIR first" >&2
  exit 3
fi

STATE="${BOTTLECRM_STATE_DIR:-$DIR}"
mkdir -p "$STATE" "$STATE/media" "$STATE/static"
STATE="$(cd "$STATE" && pwd)"
PIDFILE="$STATE/server.pid"
LOG="$STATE/server.log"
DB="$STATE/db.sqlite3"

if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "a BottleCRM server is already running from $STATE (pid $(cat "$PIDFILE")); run stop.sh $STATE first" >&2
  exit 1
fi
rm -f "$PIDFILE"

if "$PY" - "$PORT" <<'PYEOF'; then
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PYEOF
  echo "port $PORT on 127.0.0.1 is already in use" >&2
  exit 1
fi

if [ "$FRESH" = 1 ] || [ ! -s "$DB" ]; then
  rm -f "$DB" "$DB-journal" "$DB-wal" "$DB-shm"
  cp "$TEMPLATE" "$DB"
fi

T0=${EPOCHREALTIME:-0}
: >"$LOG"
(
  cd "$STATE"
  export PYTHONPATH="$DIR/settings" DJANGO_SETTINGS_MODULE=bcrm_settings \
         BOTTLECRM_DIR="$STATE" BOTTLECRM_DB="$DB" ENV_TYPE=dev PYTHONDONTWRITEBYTECODE=1 \
         SECRET_KEY="engati-etl-bottlecrm-test-secret-key-0123456789abcdef" PYTHONUNBUFFERED=1
  # setsid: not killed with the caller's process group; all fds redirected so
  # a caller reading our stdout through a pipe is not held open by the server.
  exec setsid "$VENV/bin/gunicorn" crm.wsgi:application \
    --bind "127.0.0.1:$PORT" --workers 1 --timeout 120 --graceful-timeout 5 \
    --no-control-socket --access-logfile - --error-logfile - </dev/null >>"$LOG" 2>&1
) &
echo $! >"$PIDFILE"

if ! "$PY" - "$PORT" "$(cat "$PIDFILE")" <<'PYEOF'; then
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        print("gunicorn exited during start-up", file=sys.stderr)
        sys.exit(1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
print("timed out after 60 s waiting for /healthz/", file=sys.stderr)
sys.exit(1)
PYEOF
  echo "BottleCRM failed to start on port $PORT; last lines of $LOG:" >&2
  tail -40 "$LOG" >&2
  if kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  exit 1
fi
T1=${EPOCHREALTIME:-0}
echo "[bottlecrm start] up in $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.2f", b-a}') s (pid $(cat "$PIDFILE"), db $DB, log $LOG)" >&2
echo "BOTTLECRM_URL=http://127.0.0.1:$PORT"
