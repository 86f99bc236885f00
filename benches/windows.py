#!/usr/bin/env python3
"""Adaptive windows benchmark: a one-year backfill with `--window 1d` against `--window auto`,
in requests and wall time, and the requests as a ratio of the minimum the data needs (issue
12, section 1; README "Adaptive windows").

    cargo build --release
    python3 benches/windows.py [--users 10000] [--dense-rate 0.01] [--dense-sessions 300]
                               [--sessions 2] [--latency-ms 0] [--modes 1d auto auto-31d]

(ENGATI_ETL_EXE=path picks another binary; CARGO_TARGET_DIR is honoured.)

The sandbox runs as its own process with a year of history (2025-01-01 .. 2026-01-01) and a
realistic skew: most users sparse (--sessions sessions a year on average, ~8 messages each),
a share of them (--dense-rate) very dense (--dense-sessions sessions a year). Each mode
exports every user (filters opt1=yes and opt1=no) to JSONL with the default page size (500),
--concurrency 32 and --max-rps 100000:

- `1d`: one request per (user, day) at least;
- `auto`: `--window auto --max-window 366d` (one window covering the range);
- `auto-31d`: `--window auto` with its default `--max-window 31d` (12 windows a year).

The minimum is the sum over users of max(1, ceil(messages / page size)): what a reader that
knew every user's count in advance would need with one window covering the range. Messages
per user are counted from the `auto` output, after checking every mode wrote the same number
of rows per user. Results are printed as a table and appended as JSON lines to
$CARGO_TARGET_DIR/bench-windows.jsonl.
"""

import argparse
import collections
import glob
import json
import math
import os
import shutil
import subprocess
import tempfile
import time

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EXE = os.environ.get("ENGATI_ETL_EXE", os.path.join(TARGET, "release", "engati-etl"))
RESULTS = os.path.join(TARGET, "bench-windows.jsonl")
PAGE_SIZE = 500
MODES = {
    "1d": ["--window", "1d"],
    "auto": ["--window", "auto", "--max-window", "366d"],
    "auto-31d": ["--window", "auto"],
}


def start_sandbox(a):
    return common.start_sandbox(
        EXE, "--port", 0, "--users", a.users, "--start", "2025-01-01", "--days", 365,
        "--sessions-per-user", a.sessions, "--dense-rate", a.dense_rate,
        "--dense-sessions", a.dense_sessions, "--latency-ms", a.latency_ms)


def export(env, out, mode):
    """One export; returns its run report and the wall time measured here, s."""
    shutil.rmtree(out, ignore_errors=True)
    args = [EXE, "export", "--provider", "custom", "--base-url", env["ENGATI_BASE_URL"],
            "--customer-id", env["ENGATI_CUSTOMER_ID"], "--bot-key", env["ENGATI_BOT_KEY"],
            "--attribute", "opt1=yes", "--attribute", "opt1=no",
            "--since", "2025-01-01", "--until", "2026-01-01", *MODES[mode],
            "--format", "jsonl", "--out", out, "--concurrency", "32", "--max-rps", "100000",
            "--quiet"]
    t = time.monotonic()
    p = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"{mode}: export failed ({p.returncode}): {p.stderr[-2000:]}")
    with open(os.path.join(out, "_run_report.json")) as f:
        return json.load(f), wall


def rows_per_user(out):
    counts = collections.Counter()
    for f in glob.glob(os.path.join(out, "messages", "**", "*.jsonl"), recursive=True):
        with open(f) as fh:
            for line in fh:
                counts[json.loads(line)["channel_user_id"]] += 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--sessions", type=float, default=2.0)
    ap.add_argument("--dense-rate", type=float, default=0.01)
    ap.add_argument("--dense-sessions", type=float, default=300.0)
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-windows-")
    sb, env = start_sandbox(a)
    results, counts = {}, {}
    try:
        for mode in a.modes:
            out = os.path.join(work, mode)
            report, wall = export(env, out, mode)
            counts[mode] = rows_per_user(out)
            results[mode] = {"requests": report["requests"]["total"],
                             "wall_s": round(wall, 2),
                             "cells": report["cells"]["planned"],
                             "messages": report["messages"]["written"],
                             "users": report["users"],
                             "windows": report.get("windows")}
            r = results[mode]
            print(f"  {mode:>8}: {r['requests']:>9,} requests, {r['cells']:>9,} cells, "
                  f"{r['messages']:,} messages, {r['wall_s']:.1f} s", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        common.stop(sb)
        shutil.rmtree(work, ignore_errors=True)
    first = counts[a.modes[0]]
    for mode in a.modes[1:]:
        if counts[mode] != first:
            raise SystemExit(f"{mode} wrote different rows per user than {a.modes[0]}")
    users = results[a.modes[0]]["users"]
    with_messages = len(first)
    minimum = sum(max(1, math.ceil(n / PAGE_SIZE)) for n in first.values())
    minimum += users - with_messages  # a user without messages still costs one request
    print(f"  minimum: {minimum:,} requests ({users:,} users, {with_messages:,} with messages, "
          f"{sum(first.values()):,} messages, page size {PAGE_SIZE})")
    for mode in a.modes:
        r = results[mode]
        r["ratio_to_minimum"] = round(r["requests"] / minimum, 3)
        print(f"  {mode:>8}: {r['ratio_to_minimum']:.3f}x the minimum")
    line = {"bench": "windows", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "exe": EXE, "users": a.users, "sessions": a.sessions, "dense_rate": a.dense_rate,
            "dense_sessions": a.dense_sessions, "latency_ms": a.latency_ms,
            "minimum": minimum, "results": results}
    os.makedirs(TARGET, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(line) + "\n")
    auto = results.get("auto")
    if auto:
        print("PASS" if auto["ratio_to_minimum"] <= 1.3 else "FAIL",
              f"auto within 1.3x of the minimum: {auto['ratio_to_minimum']:.3f}x")


if __name__ == "__main__":
    main()
