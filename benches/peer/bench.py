#!/usr/bin/env python3
"""Run engati-etl and the dlt peer against the same sandbox, N times each, and print medians.

    python3 benches/peer/bench.py --engati-etl path/to/engati-etl --python DIR/bin/python \
        [--latency-ms 0 50] [--runs 3] [--workers 32] [--port 18200] [-- extra dlt_export.py args]

For each latency it starts `engati-etl sandbox --users 200 --days 31 --seed 42 --latency-ms L`,
runs both tools alternately (rust, dlt, rust, dlt, ...) on opt1=yes, 2026-08-01..2026-09-01,
checks that both wrote the same number of messages, stops the sandbox (by PID) and prints one
JSON line per run and a median summary per latency. Stdlib only.

Each run reports wall time and CPU time (user + sys of the process, from getrusage of the
children), and CPU seconds per million messages; the summary has both ratios (messages/s and
CPU per message). The small default export (4,485 messages) is dominated by dlt's ~1.3 s of
start-up; for CPU per message on a realistic export (README benchmark 5):

    python3 benches/peer/bench.py --engati-etl BIN --python $PY --latency-ms 0 --runs 1 \
        --users 400 --start 2026-03-01 --days 180 --sessions-per-user 40 \
        --since 2026-03-01 --until 2026-08-28 --window-days 60
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import common  # noqa: E402  (benches/common.py)


def start_sandbox(exe, port, latency, users, days, start, sessions):
    return common.start_sandbox(exe, "--port", port, "--users", users, "--days", days,
                                "--start", start, "--sessions-per-user", sessions,
                                "--latency-ms", latency)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_rust(exe, env, out, workers, since, until, window_days):
    shutil.rmtree(out, ignore_errors=True)
    c, t = child_cpu(), time.perf_counter()
    r = subprocess.run(
        [exe, "export", "--provider", "custom", "--base-url", env["ENGATI_BASE_URL"],
         "--customer-id", env["ENGATI_CUSTOMER_ID"], "--bot-key", env["ENGATI_BOT_KEY"],
         "--attribute", "opt1=yes", "--since", since, "--until", until, "--format", "parquet",
         "--out", out, "--max-rps", "100000", "--concurrency", str(workers),
         "--window", f"{window_days}d"],
        env={**os.environ, **env}, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, child_cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"engati-etl failed ({r.returncode}): {r.stderr[-2000:]}")
    msgs = int(re.search(r"messages\s+(\d+) written", r.stderr).group(1))
    reqs = int(re.search(r"requests\s+(\d+)", r.stderr).group(1))
    return {"tool": "engati-etl", "messages": msgs, "requests": reqs,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "messages_per_s": round(msgs / wall, 1),
            "cpu_s_per_million": round(cpu / msgs * 1e6, 2)}


def run_dlt(py, env, out, workers, since, until, window_days, extra):
    shutil.rmtree(out, ignore_errors=True)
    c, t = child_cpu(), time.perf_counter()
    r = subprocess.run(
        [py, os.path.join(HERE, "dlt_export.py"), "--base-url", env["ENGATI_BASE_URL"],
         "--customer-id", env["ENGATI_CUSTOMER_ID"], "--bot-key", env["ENGATI_BOT_KEY"],
         "--api-key-env", "ENGATI_API_KEY", "--attribute", "opt1=yes", "--since", since,
         "--until", until, "--out", out, "--workers", str(workers),
         "--window-days", str(window_days), *extra],
        env={**os.environ, **env}, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, child_cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"dlt_export.py failed ({r.returncode}): {r.stderr[-3000:]}")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    return {"tool": "dlt", "messages": s["messages"], "requests": s["requests"],
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "messages_per_s": round(s["messages"] / wall, 1),
            "cpu_s_per_million": round(cpu / s["messages"] * 1e6, 2), "pipeline_s": s["seconds"], "pipeline_messages_per_s": s["messages_per_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engati-etl", required=True)
    ap.add_argument("--python", required=True, help="python of the dlt venv (setup.sh)")
    ap.add_argument("--latency-ms", type=int, nargs="+", default=[0, 50])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--port", type=int, default=18200)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--days", type=int, default=31)
    ap.add_argument("--start", default="2026-08-01", help="the sandbox's first day of data")
    ap.add_argument("--sessions-per-user", type=float, default=6.0)
    ap.add_argument("--window-days", type=int, default=1, help="window length, both tools")
    ap.add_argument("--since", default="2026-08-01")
    ap.add_argument("--until", default="2026-09-01")
    ap.add_argument("--only", choices=["rust", "dlt"], default=None)
    ap.add_argument("extra", nargs="*", help="extra dlt_export.py arguments (after --)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="peer-bench-")
    try:
        for lat in a.latency_ms:
            sb, env = start_sandbox(a.engati_etl, a.port, lat, a.users, a.days, a.start,
                                    a.sessions_per_user)
            try:
                rows = {"engati-etl": [], "dlt": []}
                for i in range(a.runs):
                    if a.only != "dlt":
                        r = run_rust(a.engati_etl, env, f"{tmp}/rust", a.workers, a.since, a.until,
                                     a.window_days)
                        rows["engati-etl"].append(r)
                        print(json.dumps({"latency_ms": lat, "run": i + 1, **r,
                                          "loadavg_1m": os.getloadavg()[0]}), flush=True)
                    if a.only != "rust":
                        r = run_dlt(a.python, env, f"{tmp}/dlt", a.workers, a.since, a.until,
                                    a.window_days, a.extra)
                        rows["dlt"].append(r)
                        print(json.dumps({"latency_ms": lat, "run": i + 1, **r,
                                          "loadavg_1m": os.getloadavg()[0]}), flush=True)
            finally:
                common.stop(sb)
            summary = {"latency_ms": lat, "workers": a.workers, "runs": a.runs,
                       "window_days": a.window_days}
            for tool, rs in rows.items():
                if not rs:
                    continue
                summary[tool] = {
                    "messages": sorted({r["messages"] for r in rs}),
                    "requests": sorted({r["requests"] for r in rs}),
                    "median_wall_s": statistics.median(r["wall_s"] for r in rs),
                    "median_messages_per_s": statistics.median(r["messages_per_s"] for r in rs),
                    "median_cpu_s": statistics.median(r["cpu_s"] for r in rs),
                    "median_cpu_s_per_million": statistics.median(
                        r["cpu_s_per_million"] for r in rs),
                }
                if tool == "dlt":
                    summary[tool]["median_pipeline_s"] = statistics.median(r["pipeline_s"] for r in rs)
            if rows["engati-etl"] and rows["dlt"]:
                summary["same_messages"] = (summary["engati-etl"]["messages"]
                                            == summary["dlt"]["messages"])
                summary["ratio_messages_per_s_rust_over_dlt"] = round(
                    summary["engati-etl"]["median_messages_per_s"]
                    / summary["dlt"]["median_messages_per_s"], 2)
                # CPU per message (user + sys of each process), dlt over engati-etl.
                summary["ratio_cpu_per_message_dlt_over_rust"] = round(
                    summary["dlt"]["median_cpu_s_per_million"]
                    / summary["engati-etl"]["median_cpu_s_per_million"], 1)
            print("SUMMARY " + json.dumps(summary), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
