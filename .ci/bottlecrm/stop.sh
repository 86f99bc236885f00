#!/usr/bin/env bash
# stop.sh DIR — stop the BottleCRM server started by start.sh, by the PID in
# DIR/server.pid (or the BOTTLECRM_STATE_DIR it was started with). SIGTERM,
# then SIGKILL after 15 s. Exit 0 also when nothing was running.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
PIDFILE="$1/server.pid"
if [ ! -s "$PIDFILE" ]; then
  echo "[bottlecrm stop] not running (no $PIDFILE)"
  exit 0
fi
PID="$(cat "$PIDFILE")"
case "$PID" in ''|*[!0-9]*) echo "bad pid file $PIDFILE" >&2; rm -f "$PIDFILE"; exit 1 ;; esac
if ! kill -0 "$PID" 2>/dev/null; then
  echo "[bottlecrm stop] pid $PID already gone"
  rm -f "$PIDFILE"
  exit 0
fi
# Never signal a recycled pid that is not our gunicorn.
if [ -r "/proc/$PID/cmdline" ] && ! tr '\0' ' ' <"/proc/$PID/cmdline" | grep -q gunicorn; then
  echo "[bottlecrm stop] pid $PID is not gunicorn; not signalling it" >&2
  rm -f "$PIDFILE"
  exit 1
fi
kill -TERM "$PID"
# Gone, or a zombie waiting for a reaper (our job is done either way).
alive() {
  kill -0 "$PID" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$PID/stat" 2>/dev/null)" != Z ]
}
for _ in $(seq 1 150); do
  alive || break
  sleep 0.1
done
if alive; then
  echo "[bottlecrm stop] pid $PID still alive after 15 s; SIGKILL" >&2
  kill -KILL "$PID" 2>/dev/null || true
fi
rm -f "$PIDFILE"
echo "[bottlecrm stop] stopped pid $PID"
