#!/usr/bin/env python3
"""End-to-end benchmarks of engati-etl against its sandbox (performance benchmarks 2, 3, 4, 6).

    cargo build --release && cargo bench --bench cpu        # the CPU floor (benchmark 1)
    python3 benches/e2e.py [latency|cpu|memory|requests|all] [--runs 3]

The sandbox runs as its own process (`engati-etl sandbox`), so only the exporter's CPU and
memory are measured: wall, user and system seconds and peak RSS come from `/usr/bin/time -f`.
Each figure is the median of `--runs` runs. Results are printed as text and appended as one
JSON line per benchmark to `target/bench-e2e.jsonl`.

- latency:  sandbox latency 50 ms, 300 users x 31 days, concurrency 32: achieved requests/s
            over C/L (= 640/s); then --max-rps 200, achieved over 200.
- cpu:      latency 0, ~2.5 M messages (5,200 users x 60 sessions): messages/s, CPU seconds per
            million messages, and that divided by the floor of benchmark 1(c) (Parquet). Dense
            (31-day windows, full 500-message pages) and sparse (1-day windows).
- memory:   peak RSS at ~0.5 M and ~5 M messages (1-day windows, the defaults).
- requests: requests sent vs the minimum the data needs: per (user, day) cell
            max(1, ceil(rows / 500)), plus one Users API call per filter. Needs pyarrow
            (run this script with benches/peer's venv python, which has it).
The peer comparison (benchmark 5) is benches/peer/bench.py.
"""

import argparse
import glob
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "engati-etl")
RESULTS = os.path.join(ROOT, "target", "bench-e2e.jsonl")
# The binary measured (the sandbox always runs EXE): `--exporter PATH` compares another build.
EXPORTER = EXE
# Extra arguments given to every export (`--args "--raw-json full"` measures a setting).
EXTRA_ARGS = []


def start_sandbox(port, users, latency=0, sessions=6.0):
    return common.start_sandbox(EXE, "--port", port, "--users", users, "--latency-ms", latency,
                                "--sessions-per-user", sessions)


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def export(env, out, *extra, timeline=None):
    """Runs one export under /usr/bin/time; returns (wall, user, sys, maxrss_kb, report).

    With `timeline` (a list), the exporter's RSS in MB is sampled into it every 0.25 s."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["/usr/bin/time", "-f", "TIME %e %U %S %M", EXPORTER, "export", "--provider", "custom",
            "--base-url", env["ENGATI_BASE_URL"], "--customer-id", env["ENGATI_CUSTOMER_ID"],
            "--bot-key", env["ENGATI_BOT_KEY"], "--attribute", "opt1=yes", "--attribute", "opt1=no",
            "--since", "2026-08-01", "--until", "2026-09-01", "--format", "parquet", "--out", out,
            "--quiet", *EXTRA_ARGS, *extra]
    p = subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if timeline is not None:
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            rss = _rss_mb(kids[0]) if kids else None
            if rss:
                timeline.append(rss)
            time.sleep(0.25)
    stdout, stderr = p.communicate()
    line = [x for x in stderr.splitlines() if x.startswith("TIME ")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"export failed ({p.returncode}): {stderr[-2000:]}")
    _, wall, user, sys_, rss = line[-1].split()
    with open(os.path.join(out, "_run_report.json")) as f:
        report = json.load(f)
    return float(wall), float(user), float(sys_), int(rss), report


def median_runs(runs, env, out, *extra):
    rows = [export(env, out, *extra) for _ in range(runs)]
    med = lambda i: statistics.median(r[i] for r in rows)  # noqa: E731
    return {"wall_s": med(0), "user_s": med(1), "sys_s": med(2), "max_rss_kb": med(3),
            "report": rows[-1][4], "runs": [[r[0], r[1], r[2], r[3]] for r in rows]}


def record(name, data):
    data = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(data) + "\n")


def floor_s_per_million():
    """Benchmark 1(c): seconds per million messages (parse + normalize + Arrow + Parquet)."""
    est = os.path.join(ROOT, "target", "criterion", "floor_messages", "c_parquet", "new", "estimates.json")
    corpus = os.path.join(ROOT, "target", "criterion", "floor_corpus.json")
    if not (os.path.exists(est) and os.path.exists(corpus)):
        return None
    with open(est) as f:
        ns = json.load(f)["median"]["point_estimate"]
    with open(corpus) as f:
        msgs = json.load(f)["messages"]
    return ns / 1e9 / msgs * 1e6


def bench_latency(runs, work):
    p, env = start_sandbox(18501, 300, latency=50)
    try:
        c, lat = 32, 0.05
        r = median_runs(runs, env, os.path.join(work, "lat"), "--concurrency", str(c), "--max-rps", "100000")
        req = r["report"]["requests"]["total"]
        busy = r["report"]["duration_ms"] / 1000
        rps = req / busy
        print(f"latency-bound: {req} requests in {busy:.2f} s = {rps:.0f}/s; C/L = {c / lat:.0f}/s -> "
              f"{100 * rps / (c / lat):.1f}% of C/L (target >= 95%)")
        record("latency_bound", {"requests": req, "seconds": busy, "rps": rps, "c_over_l": c / lat,
                                 "fraction": rps / (c / lat), "wall_s": r["wall_s"], "runs": r["runs"]})
        r = median_runs(runs, env, os.path.join(work, "lat2"), "--concurrency", str(c), "--max-rps", "200")
        req = r["report"]["requests"]["total"]
        busy = r["report"]["duration_ms"] / 1000
        rps = req / busy
        print(f"rate-bound: {rps:.1f}/s with --max-rps 200 -> {100 * rps / 200:.1f}% of max-rps")
        record("rate_bound", {"requests": req, "seconds": busy, "rps": rps, "max_rps": 200,
                              "fraction": rps / 200, "runs": r["runs"]})
    finally:
        common.stop(p)


def bench_cpu(runs, work):
    floor = floor_s_per_million()
    p, env = start_sandbox(18502, 5200, sessions=60)
    try:
        for label, window, conc in (("dense", "31d", "8"), ("sparse", "1d", "16")):
            r = median_runs(runs, env, os.path.join(work, "cpu"), "--window", window,
                            "--concurrency", conc, "--max-rps", "100000")
            msgs = r["report"]["messages"]["written"]
            req = r["report"]["requests"]["total"]
            cpu = r["user_s"] + r["sys_s"]
            per_m = cpu / msgs * 1e6
            ratio = per_m / floor if floor else None
            print(f"cpu-bound ({label}, {window} windows): {msgs} messages, {req} requests, "
                  f"{msgs / r['wall_s']:.0f} msg/s, {per_m:.2f} CPU s per 1M messages"
                  + (f" = {ratio:.2f}x the floor of {floor:.2f} s (target <= 1.5x)" if floor else
                     " (run `cargo bench --bench cpu` for the floor)")
                  + f", peak RSS {r['max_rss_kb'] / 1024:.0f} MB")
            record(f"cpu_bound_{label}", {"messages": msgs, "requests": req, "wall_s": r["wall_s"],
                                          "cpu_s": cpu, "cpu_s_per_million": per_m,
                                          "floor_s_per_million": floor, "ratio": ratio,
                                          "max_rss_kb": r["max_rss_kb"], "runs": r["runs"]})
    finally:
        common.stop(p)


def bench_memory(runs, work):
    out = {}
    # 5M messages = 10x the users of 0.5M (the defaults: units of 5,000 users per day). The
    # control run "5M-units" keeps the 0.5M run's unit shape (1,040 users per unit) to separate
    # export size from unit size; the timeline shows RSS over the 5M run (flat = no growth).
    for label, users, extra in (("0.5M", 1040, ()), ("5M", 10400, ()),
                                ("5M-units", 10400, ("--checkpoint-users", "1040"))):
        p, env = start_sandbox(18503, users, sessions=60)
        try:
            r = median_runs(runs, env, os.path.join(work, "mem"), "--concurrency", "16",
                            "--max-rps", "100000", *extra)
            msgs = r["report"]["messages"]["written"]
            out[label] = r["max_rss_kb"]
            print(f"memory {label}: {msgs} messages, peak RSS {r['max_rss_kb'] / 1024:.1f} MB "
                  f"({r['wall_s']:.1f} s)")
            data = {"messages": msgs, "max_rss_kb": r["max_rss_kb"], "wall_s": r["wall_s"],
                    "runs": r["runs"]}
            if label == "5M":
                tl = []
                export(env, os.path.join(work, "mem"), "--concurrency", "16", "--max-rps",
                       "100000", timeline=tl)
                if len(tl) >= 8:
                    q = [tl[min(len(tl) - 1, int(len(tl) * f))] for f in (0.1, 0.25, 0.5, 0.75, 0.95)]
                    print("memory 5M timeline: RSS at 10/25/50/75/95% of the run: "
                          + ", ".join(f"{x:.0f}" for x in q) + " MB")
                    data["timeline_mb"] = q
            record(f"memory_{label}", data)
        finally:
            common.stop(p)
    ratio = out["5M"] / out["0.5M"]
    ratio_units = out["5M-units"] / out["0.5M"]
    print(f"memory: 5M / 0.5M peak RSS = {ratio:.2f} (target <= 1.2, and <= 150 MB); "
          f"with the same unit shape {ratio_units:.2f}")
    record("memory_ratio", {"ratio": ratio, "ratio_same_units": ratio_units})


def bench_requests(work):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        print("requests: skipped (needs pyarrow: run with benches/peer's venv python)")
        return
    p, env = start_sandbox(18504, 1000, sessions=60)
    try:
        out = os.path.join(work, "req")
        # A small page size makes multi-page cells common.
        _, _, _, _, report = export(env, out, "--page-size", "50", "--max-rps", "100000")
        counts = {}
        for f in glob.glob(os.path.join(out, "messages", "*", "*.parquet")):
            day = os.path.basename(os.path.dirname(f))
            t = pq.read_table(f, columns=["channel_user_id"])
            for u in t.column("channel_user_id").to_pylist():
                counts[(u, day)] = counts.get((u, day), 0) + 1
        cells = report["cells"]["planned"]
        multi = sum(max(1, math.ceil(n / 50)) for n in counts.values())
        minimum = (cells - len(counts)) + multi + 2  # empty cells: one request each; 2 filters
        sent = report["requests"]["total"]
        print(f"requests: {sent} sent, minimum {minimum} -> {sent / minimum:.4f}x (target <= 1.02x)")
        record("requests", {"sent": sent, "minimum": minimum, "ratio": sent / minimum, "cells": cells})
    finally:
        common.stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=["all", "latency", "cpu", "memory", "requests"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--exporter", default=EXE,
                    help="the engati-etl binary measured (default: target/release/engati-etl)")
    ap.add_argument("--args", default="",
                    help='extra arguments for every export, e.g. --args="--raw-json full"')
    a = ap.parse_args()
    global EXPORTER, EXTRA_ARGS
    EXPORTER = a.exporter
    EXTRA_ARGS = shlex.split(a.args)
    if not os.path.exists(EXE):
        raise SystemExit("build first: cargo build --release")
    with tempfile.TemporaryDirectory() as work:
        if a.which in ("all", "latency"):
            bench_latency(a.runs, work)
        if a.which in ("all", "cpu"):
            bench_cpu(a.runs, work)
        if a.which in ("all", "memory"):
            bench_memory(a.runs, work)
        if a.which in ("all", "requests"):
            bench_requests(work)


if __name__ == "__main__":
    sys.exit(main())
