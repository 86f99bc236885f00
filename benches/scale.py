#!/usr/bin/env python3
"""Scale benchmarks of engati-etl (issue 11): memory with 1M users, Delta on S3, 4 shards.

    cargo build --release
    bash .ci/s3s-fs.sh && bash .ci/pydelta.sh      # target/s3s/bin/s3s-fs, target/pyvenv
    target/pyvenv/bin/python benches/scale.py [memory|delta|shards|all] [--days 1]

Run it with a Python that has `deltalake` and pyarrow (target/pyvenv; the `shards` benchmark
reads the table back with them). Each benchmark runs once (one run per figure: these are long).
The sandbox (`engati-etl sandbox`) and the S3-compatible server (`s3s-fs`, the one the tests
use) run as their own processes, so only the exporter is measured: wall, user and system
seconds and peak RSS come from `/usr/bin/time -f`. Results are printed and appended as one JSON
line per figure to `target/bench-scale.jsonl`. `ENGATI_ETL_EXE`, `S3S_FS_BIN` override the
binaries (default target/release/engati-etl, target/s3s/bin/s3s-fs); `SCALE_TMP` is where the
work directory goes (exports and s3s-fs's bucket), `SCALE_KEEP=DIR` keeps the
sharded table's files and the shards' logs there. `--mem-users A B` and `--delta-users U`
change the sizes (for a quick try: `memory --mem-users 500 1000`, `delta --delta-users 50`).

- memory: peak RSS of the exporter for 1,000,000 users with sparse conversations (sandbox
          `--sessions-per-user 1 --days D`, a few messages per user) vs the same export of
          100,000 users, and their ratio (targets: <= 150 MB, <= 1.2x). All users match the
          two filters `opt1=yes`, `opt1=no`; range D days from 2026-08-01 in 1-day windows
          (D = `--days`, default 1: 1M cells = 1M conversation requests).
- delta:  CPU seconds (user + sys of the exporter; s3s-fs's own CPU not counted) per million
          messages: `--format delta --out s3://lake/bench` on s3s-fs vs `--format parquet
          --out DIR` on local disk, the same sandbox (`--users U --sessions-per-user 60`,
          August 2026, latency 0; U = `--delta-users`, default 10,400 = ~5 M messages); the
          ratio delta / parquet (target <= 1.3x).
- shards: 4 shards (`--shard 0/4` .. `3/4`) at once into one Delta table on s3s-fs (300 users,
          August 2026, sandbox latency 5 ms, `--max-rps 40` per shard so the run lasts about a
          minute); shard 1 is killed with SIGKILL right after its first Delta commit appears
          in `_delta_log`, then restarted with a new, empty `--state-dir`. When all have
          finished, Python `deltalake` reads the table: rows and distinct message_ids vs a
          single unsharded export of the same range into a second table (row for row equal
          by message_id, all columns but `extracted_at` and `run_id`), duplicate message_ids (must be 0),
          Delta versions (commits), and conflicts, from the shards' stderr (`RUST_LOG=warn,
          engati_etl=info,deltalake_core=info`): delta-rs's "version already exists, will retry"
          (a lost race for `_delta_log/N.json`, rebased and retried), the `num_retries` of its
          "transaction committed successfully" lines, and the exporter's "Delta commit
          conflicted; planning again" (a re-plan). The reference export is not rate-limited.
"""

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.environ.get("ENGATI_ETL_EXE", os.path.join(ROOT, "target", "release", "engati-etl"))
S3S = os.environ.get("S3S_FS_BIN", os.path.join(ROOT, "target", "s3s", "bin", "s3s-fs"))
RESULTS = os.path.join(ROOT, "target", "bench-scale.jsonl")
ACCESS_KEY, SECRET_KEY, BUCKET = "AKTESTENGATIETL", "SKtest-engati-etl-0123456789", "lake"
FILTERS = ["--attribute", "opt1=yes", "--attribute", "opt1=no"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_sandbox(users, *extra):
    return common.start_sandbox(EXE, "--port", free_port(), "--users", users, *extra)


def start_s3(work):
    """s3s-fs as tests/util/s3.rs starts it: bucket `lake` under a temp dir, SigV4 keys."""
    root = os.path.join(work, "s3")
    os.makedirs(os.path.join(root, BUCKET), exist_ok=True)
    port = free_port()
    p = subprocess.Popen([S3S, "--host", "127.0.0.1", "--port", str(port), "--access-key",
                          ACCESS_KEY, "--secret-key", SECRET_KEY, root],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("s3s-fs did not start")
            time.sleep(0.05)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_ALLOW_HTTP": "true"}
    return p, env, os.path.join(root, BUCKET)


def export_args(env, since, until, fmt, out, *extra):
    return [EXE, "export", "--provider", "custom", "--base-url", env["ENGATI_BASE_URL"],
            "--customer-id", env["ENGATI_CUSTOMER_ID"], "--bot-key", env["ENGATI_BOT_KEY"],
            *FILTERS, "--since", since, "--until", until, "--format", fmt, "--out", out,
            "--quiet", *extra]


def timed_export(env, args, report_glob):
    """Runs one export under /usr/bin/time; returns (wall, user, sys, maxrss_kb, report)."""
    p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", *args],
                       env={**os.environ, **env}, capture_output=True, text=True)
    line = [x for x in p.stderr.splitlines() if x.startswith("TIME ")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"export failed ({p.returncode}): {p.stderr[-2000:]}")
    _, wall, user, sys_, rss = line[-1].split()
    reports = sorted(glob.glob(report_glob, recursive=True))
    report = json.load(open(reports[-1])) if reports else {}
    return float(wall), float(user), float(sys_), int(rss), report


def record(name, data):
    data = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "runs": 1, **data}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(data) + "\n")


def day_after(days):
    """The date `days` days after 2026-08-01 (the exclusive end of the range)."""
    return (datetime.date(2026, 8, 1) + datetime.timedelta(days=days)).isoformat()


def bench_memory(work, days, small=100_000, large=1_000_000):
    rss = {}
    until = day_after(days)
    for users in (small, large):
        p, env = start_sandbox(users, "--days", str(days), "--sessions-per-user", "1")
        try:
            out = os.path.join(work, "mem")
            shutil.rmtree(out, ignore_errors=True)
            args = export_args(env, "2026-08-01", until, "parquet", out, "--concurrency", "16",
                               "--max-rps", "100000")
            wall, user, sys_, kb, rep = timed_export(env, args, os.path.join(out, "_run_report.json"))
            rss[users] = kb
            n_users = rep.get("users", {})
            msgs = rep.get("messages", {}).get("written")
            req = rep.get("requests", {}).get("total")
            print(f"memory {users:,} users x {days} day(s): {msgs} messages, {req} requests, "
                  f"peak RSS {kb / 1024:.1f} MB, {wall:.0f} s wall, {user + sys_:.0f} CPU s (1 run)")
            record(f"memory_{users}_users", {"users": users, "days": days, "report_users": n_users,
                                              "messages": msgs, "requests": req, "max_rss_kb": kb,
                                              "wall_s": wall, "user_s": user, "sys_s": sys_})
        finally:
            common.stop(p)
            shutil.rmtree(os.path.join(work, "mem"), ignore_errors=True)
    ratio = rss[large] / rss[small]
    print(f"memory: {large:,} / {small:,} users peak RSS = {ratio:.2f}x ({rss[large] / 1024:.1f} vs "
          f"{rss[small] / 1024:.1f} MB; targets <= 150 MB and <= 1.2x; 1 run)")
    record("memory_users_ratio", {"ratio": ratio, "users": [small, large], "days": days,
                                  "max_rss_kb": [rss[small], rss[large]]})


def bench_delta(work, users):
    s3, s3env, _ = start_s3(work)
    p, env = start_sandbox(users, "--sessions-per-user", "60")
    per_m = {}
    try:
        cases = (("parquet", "parquet", os.path.join(work, "pq"), {}),
                 ("delta", "delta", f"s3://{BUCKET}/bench", s3env))
        for label, fmt, out, extra_env in cases:
            state = os.path.join(work, f"state-{label}")
            shutil.rmtree(state, ignore_errors=True)
            if fmt == "parquet":
                shutil.rmtree(out, ignore_errors=True)
                report = os.path.join(out, "_run_report.json")
            else:
                report = os.path.join(state, "**", "_run_report*.json")
            args = export_args(env, "2026-08-01", "2026-09-01", fmt, out, "--concurrency", "16",
                               "--max-rps", "100000", "--state-dir", state)
            wall, user, sys_, kb, rep = timed_export({**env, **extra_env}, args, report)
            msgs = rep["messages"]["written"]
            cpu = user + sys_
            per_m[label] = cpu / msgs * 1e6
            print(f"{label}: {msgs:,} messages, {wall:.1f} s wall, {cpu:.1f} CPU s (user {user:.1f}"
                  f" + sys {sys_:.1f}) = {per_m[label]:.2f} CPU s per million messages, peak RSS "
                  f"{kb / 1024:.0f} MB (1 run)")
            record(f"cpu_{label}", {"format": fmt, "out": out, "messages": msgs,
                                    "requests": rep["requests"]["total"], "wall_s": wall,
                                    "user_s": user, "sys_s": sys_, "cpu_s_per_million": per_m[label],
                                    "max_rss_kb": kb})
            shutil.rmtree(os.path.join(work, "pq"), ignore_errors=True)
        ratio = per_m["delta"] / per_m["parquet"]
        print(f"delta on s3s-fs / local parquet CPU per message = {ratio:.2f}x (target <= 1.3x; 1 run)")
        record("cpu_delta_vs_parquet", {"ratio": ratio, "users": users})
    finally:
        common.stop(p)
        common.stop(s3)


def delta_log(table_dir):
    """The commits of a Delta table stored as files: [(version, [action dicts])]."""
    out = []
    for f in sorted(glob.glob(os.path.join(table_dir, "_delta_log", "*.json"))):
        name = os.path.basename(f)[:-5]
        if not name.isdigit():
            continue
        with open(f) as fh:
            out.append((int(name), [json.loads(x) for x in fh if x.strip()]))
    return out


def bench_shards(work):
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    s3, s3env, bucket = start_s3(work)
    p, env = start_sandbox(300, "--latency-ms", "5")
    table = f"s3://{BUCKET}/sharded"
    table_dir = os.path.join(bucket, "sharded")
    log_env = {**os.environ, **env, **s3env,
               "RUST_LOG": "warn,engati_etl=info,deltalake_core=info"}
    rate = ["--concurrency", "8", "--max-rps", "40"]
    procs, logs = {}, {}

    def launch(i, state):
        err = open(os.path.join(work, f"shard{i}-{os.path.basename(state)}.log"), "w")
        logs.setdefault(i, []).append(err.name)
        args = export_args(env, "2026-08-01", "2026-09-01", "delta", table, "--shard", f"{i}/4",
                           "--state-dir", state, *rate)
        return subprocess.Popen(args, env=log_env, stdout=subprocess.DEVNULL, stderr=err)

    try:
        t0 = time.time()
        for i in range(4):
            procs[i] = launch(i, os.path.join(work, f"state{i}"))
        # Kill shard 1 after its first commit (its txn appId names its namespace `...@s1of4`).
        killed_at = None
        while killed_at is None:
            if procs[1].poll() is not None:
                raise SystemExit("shard 1 finished before its first commit was seen")
            for v, actions in delta_log(table_dir):
                if any("s1of4" in a.get("txn", {}).get("appId", "") for a in actions):
                    procs[1].kill()  # SIGKILL
                    procs[1].wait()
                    killed_at = (time.time() - t0, v)
                    break
            time.sleep(0.05)
        commits_1 = [v for v, a in delta_log(table_dir)
                     if any("s1of4" in x.get("txn", {}).get("appId", "") for x in a)]
        print(f"shards: shard 1 killed -9 at {killed_at[0]:.1f} s, after its commit "
              f"version {killed_at[1]} ({len(commits_1)} commit(s) of shard 1 in the log)")
        restart_state = os.path.join(work, "state1-fresh")
        os.makedirs(restart_state)
        procs[1] = launch(1, restart_state)
        codes = {i: procs[i].wait() for i in range(4)}
        sharded_wall = time.time() - t0
        if any(codes.values()):
            raise SystemExit(f"a shard failed: exit codes {codes}; logs {logs}")

        # The reference: one unsharded export of the same range into another table.
        single = subprocess.run(
            export_args(env, "2026-08-01", "2026-09-01", "delta", f"s3://{BUCKET}/single",
                        "--state-dir", os.path.join(work, "state-single"), "--max-rps", "100000"),
            env=log_env, capture_output=True, text=True)
        if single.returncode != 0:
            raise SystemExit(f"single export failed: {single.stderr[-2000:]}")

        opts = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3env["AWS_ENDPOINT_URL"],
                "AWS_ALLOW_HTTP": "true"}
        dt = DeltaTable(table, storage_options=opts)
        ref = DeltaTable(f"s3://{BUCKET}/single", storage_options=opts)
        a = dt.to_pyarrow_table()
        b = ref.to_pyarrow_table()
        rows, ref_rows = a.num_rows, b.num_rows
        distinct = len(pc.unique(a.column("message_id")))
        dups = rows - distinct
        cols = [c for c in b.column_names if c not in ("extracted_at", "run_id")]
        sa = a.select(cols).sort_by("message_id")
        sb = b.select(cols).sort_by("message_id")
        equal = sa.equals(sb)
        differ = [] if equal else [c for c in cols if not sa.column(c).equals(sb.column(c))]
        if differ:
            print(f"  columns that differ: {differ}; schemas {sa.schema} vs {sb.schema}")
        log = delta_log(table_dir)
        if os.environ.get("SCALE_KEEP"):
            shutil.copytree(table_dir, os.environ["SCALE_KEEP"], dirs_exist_ok=True)
        versions = dt.version() + 1
        retries = lost = replans = 0
        for files in logs.values():
            for f in files:
                for line in open(f):
                    replans += "planning again" in line
                    lost += "version already exists" in line
                    m = re.search(r"num_retries=(\d+)", line)
                    if m and "committed successfully" in line:
                        retries += int(m.group(1))
            if os.environ.get("SCALE_KEEP"):
                for f in files:
                    shutil.copy(f, os.environ["SCALE_KEEP"])
        reports = glob.glob(os.path.join(work, "state*", "**", "_run_report*.json"), recursive=True)
        print(f"shards: 4 at once, shard 1 killed -9 and restarted from an empty state dir; "
              f"{sharded_wall:.0f} s wall (1 run)")
        print(f"  rows {rows:,} vs single export {ref_rows:,}; row-for-row equal by message_id "
              f"(all columns but extracted_at, run_id): {equal}; duplicate message_ids: {dups}")
        print(f"  Delta versions: {versions} (0..{versions - 1}); lost commit races (\"version "
              f"already exists, will retry\"): {lost}; retries of committed transactions "
              f"(num_retries summed): {retries}; re-plans: {replans}; run reports: {len(reports)}")
        record("shards_delta_kill9", {"rows": rows, "single_rows": ref_rows, "equal": equal,
                                      "duplicates": dups, "versions": versions, "differ": differ,
                                      "lost_races": lost, "num_retries": retries, "replans": replans,
                                      "killed_after_s": killed_at[0],
                                      "killed_after_version": killed_at[1],
                                      "wall_s": sharded_wall, "run_reports": len(reports)})
    finally:
        for q in procs.values():
            if q.poll() is None:
                q.kill()
        common.stop(p)
        common.stop(s3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=["all", "memory", "delta", "shards"])
    ap.add_argument("--days", type=int, default=1, help="memory: days of data and of the range")
    ap.add_argument("--mem-users", type=int, nargs=2, default=[100_000, 1_000_000],
                    help="memory: the two user counts compared")
    ap.add_argument("--delta-users", type=int, default=10_400, help="delta: sandbox users")
    a = ap.parse_args()
    if not os.path.exists(EXE):
        raise SystemExit("build first: cargo build --release")
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as work:
        if a.which in ("all", "shards"):
            bench_shards(work)
        if a.which in ("all", "delta"):
            bench_delta(work, a.delta_users)
        if a.which in ("all", "memory"):
            bench_memory(work, a.days, *a.mem_users)


if __name__ == "__main__":
    sys.exit(main())
