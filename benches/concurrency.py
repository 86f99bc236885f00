#!/usr/bin/env python3
"""Adaptive concurrency benchmark: `--concurrency auto` against fixed concurrencies on a server
of limited capacity (issue 12, section 3).

    cargo build --release
    python3 benches/concurrency.py [--k 4 16 64] [--latency-ms 100] [--seconds 20] [--runs 3]

(ENGATI_ETL_EXE=path picks another binary; CARGO_TARGET_DIR is honoured.)

For each capacity K the sandbox runs as its own process in capacity mode (`engati-etl sandbox
--capacity K --latency-ms L`): it works on K requests at once at latency L, queues past K in
flight (round trips grow) and answers 429 past 2K. The best any client can do is K / L
requests per second. The export is the same every time (1-day windows, one request per
(user, day) cell, ~K/L x --seconds requests, --max-rps far above K/L), with --concurrency C for
C in {K/2, K, 3K/2, 2K} and 16, then `auto` (--max-concurrency 256). Each figure is the median
of --runs runs: throughput (200 responses per second of the run), its share of K / L, and the
share of requests answered 429. Auto passes when its throughput is at least 90% of the best
fixed concurrency's for that K with at most 1% of its requests answered 429. Results are
printed as a table and appended as JSON lines to $CARGO_TARGET_DIR/bench-concurrency.jsonl.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
# ENGATI_ETL_EXE picks another build (a debug one, or a copy of it).
EXE = os.environ.get("ENGATI_ETL_EXE", os.path.join(TARGET, "release", "engati-etl"))
RESULTS = os.path.join(TARGET, "bench-concurrency.jsonl")
DAYS = 31


def start_sandbox(port, users, latency, k):
    return common.start_sandbox(EXE, "--port", port, "--users", users, "--latency-ms", latency,
                                "--capacity", k)


def export(env, out, concurrency):
    """One export; returns its run report."""
    shutil.rmtree(out, ignore_errors=True)
    args = [EXE, "export", "--provider", "custom", "--base-url", env["ENGATI_BASE_URL"],
            "--customer-id", env["ENGATI_CUSTOMER_ID"], "--bot-key", env["ENGATI_BOT_KEY"],
            "--attribute", "opt1=yes", "--attribute", "opt1=no",
            "--since", "2026-08-01", "--until", "2026-09-01", "--window", "1d",
            "--format", "parquet", "--out", out, "--max-rps", "100000", "--quiet",
            "--concurrency", str(concurrency)]
    if concurrency == "auto":
        args += ["--max-concurrency", "256"]
    p = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"export failed ({p.returncode}): {p.stderr[-2000:]}")
    with open(os.path.join(out, "_run_report.json")) as f:
        return json.load(f)


def measure(report):
    req = report["requests"]
    ok = req["by_status"].get("200", 0)
    throttled = req["by_status"].get("429", 0)
    secs = report["duration_ms"] / 1000
    limit = req.get("concurrency") or {}
    return {"rps": ok / secs, "share_429": throttled / max(1, req["total"]), "requests": req["total"],
            "ok": ok, "throttled": throttled, "seconds": secs,
            "mean_limit": limit.get("mean_limit"), "max_limit": limit.get("max_limit"),
            "final_limit": limit.get("final_limit")}


def median_of(rows):
    out = {}
    for key in rows[0]:
        vals = [r[key] for r in rows if r[key] is not None]
        out[key] = statistics.median(vals) if vals else None
    return out


def bench_k(k, latency, seconds, runs, work, port):
    best = k / (latency / 1000)
    users = max(10, round(best * seconds / DAYS))
    p, env = start_sandbox(port, users, latency, k)
    try:
        fixed = sorted({max(1, k // 2), k, k * 3 // 2, 2 * k, 16})
        results = {}
        for c in [*fixed, "auto"]:
            rows = [measure(export(env, os.path.join(work, "out"), c)) for _ in range(runs)]
            results[c] = median_of(rows)
            r = results[c]
            extra = (f", limit mean {r['mean_limit']:.1f} max {r['max_limit']:.0f}"
                     if c == "auto" else "")
            print(f"  K={k:<3} concurrency {str(c):>4}: {r['rps']:7.1f} req/s = "
                  f"{100 * r['rps'] / best:5.1f}% of K/L, 429s {100 * r['share_429']:5.2f}% "
                  f"({r['requests']:.0f} requests, {r['seconds']:.1f} s){extra}", flush=True)
        best_c = max(fixed, key=lambda c: results[c]["rps"])
        auto = results["auto"]
        ratio = auto["rps"] / results[best_c]["rps"]
        ok = ratio >= 0.9 and auto["share_429"] <= 0.01
        print(f"K={k}: auto {auto['rps']:.1f} req/s = {100 * ratio:.1f}% of the best fixed "
              f"(concurrency {best_c}: {results[best_c]['rps']:.1f} req/s), 429s "
              f"{100 * auto['share_429']:.2f}%; fixed 16: {results[16]['rps']:.1f} req/s, 429s "
              f"{100 * results[16]['share_429']:.2f}% -> {'PASS' if ok else 'FAIL'} "
              f"(>= 90%, <= 1%)", flush=True)
        record = {"benchmark": "adaptive_concurrency", "k": k, "latency_ms": latency,
                  "k_over_l": best, "users": users, "runs": runs, "best_fixed": best_c,
                  "auto_over_best": ratio, "pass": ok,
                  "results": {str(c): r for c, r in results.items()},
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(record) + "\n")
        return ok
    finally:
        common.stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(EXE):
        raise SystemExit(f"no binary at {EXE}: cargo build --release (or set ENGATI_ETL_EXE)")
    passed = True
    with tempfile.TemporaryDirectory() as work:
        for i, k in enumerate(a.k):
            passed &= bench_k(k, a.latency_ms, a.seconds, a.runs, work, 18600 + i)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
