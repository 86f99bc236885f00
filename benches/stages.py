#!/usr/bin/env python3
"""Where an exported message's CPU goes, by stage: instructions per message counted by callgrind.

    cargo build --release
    python3 benches/stages.py [--exporter BIN] [--args "--raw-json full"]

Runs benchmark 5's export (README "Performance": 400 users, 180 days of data from 2026-03-01,
40 sessions per user, opt1=yes, 2026-03-01..2026-08-28 in 60-day windows, latency 0, Parquet)
once under `valgrind --tool=callgrind` against a sandbox process of its own (not measured),
then splits the exporter's instructions by the inclusive counts of the functions that bound
each stage (`callgrind_annotate --inclusive=yes`):

- parse: the page envelope (`wire::parse_conversations_str`) and each message
  (`WireMessage::parse_with`, which also writes the raw_json residual; `from_trait` in older
  builds);
- normalize: `PageNormalizer::page` without the message parse and the Arrow appends;
- Arrow: `MessageBatchBuilder::append` and `finish`, and the split of batches by date
  (`DayPartitions::write`: with 60-day windows it only splits and buffers, the rows are
  written when a unit commits);
- Parquet encode: `ArrowWriter::write`, `flush` and `into_inner` without zstd;
- zstd: `ZSTDCodec::compress` (and the contexts it creates);
- HTTP: `Client::conversations_page` without the envelope parse (the request, its URL, the
  body); the connection's own task (hyper's socket reads and writes) is in "other";
- other: everything else (runtime, state store, files, the connection task).

Instructions in user space only: system time (socket and file calls, page faults) is not
counted. Prints a table and appends one JSON line to target/bench-stages.jsonl.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "engati-etl")
RESULTS = os.path.join(ROOT, "target", "bench-stages.jsonl")

# (stage, [function name patterns whose inclusive counts add up], [patterns subtracted])
BOUNDS = {
    "envelope": [r"engati_etl::engati::wire::parse_conversations_str\b"],
    # Builds before the residual (92383c5 and older) inlined the derived parse into
    # `PageNormalizer::page`: there it is `serde_json::from_str`'s `from_trait`, which those
    # builds call per message and hardly anywhere else (the larger of the two counts).
    "message": [r"engati_etl::engati::wire_message::WireMessage::parse_with$|"
                r"^serde_json::de::from_trait$"],
    "page": [r"engati_etl::normalize::PageNormalizer::page\b"],
    "append": [r"engati_etl::schema::MessageBatchBuilder::append\b"],
    "finish": [r"engati_etl::schema::MessageBatchBuilder::finish\b"],
    "by_day": [r"engati_etl::sink::partitions::DayPartitions::write$"],
    "writer": [r"parquet::arrow::arrow_writer::ArrowWriter<W>::write$",
               r"parquet::arrow::arrow_writer::ArrowWriter<W>::flush$",
               r"parquet::arrow::arrow_writer::ArrowWriter<W>::into_inner$"],
    "zstd": [r"<parquet::compression::zstd_codec::ZSTDCodec as parquet::compression::Codec>::compress\b"],
    "http": [r"engati_etl::engati::client::Client::conversations_page::\{\{closure\}\}"],
}


def start_sandbox(exe, port):
    return common.start_sandbox(exe, "--port", port, "--users", 400, "--days", 180, "--start",
                                "2026-03-01", "--sessions-per-user", 40, "--latency-ms", 0)


def inclusive(cg_file):
    """function name -> inclusive instructions (the largest entry per name)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", cg_file],
                         capture_output=True, text=True, check=True).stdout
    total, fns = None, {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(?:[^\s:]*:)?(.*?)(?: \[[^\]]*\])?$", line)
        if m:
            n = int(m.group(1).replace(",", ""))
            name = m.group(2)
            fns[name] = max(n, fns.get(name, 0))
    return total, fns


def bound(fns, patterns):
    """Sum over patterns of the largest inclusive count of a function matching it."""
    s = 0
    for pat in patterns:
        rx = re.compile(pat)
        s += max((n for name, n in fns.items() if rx.search(name)), default=0)
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exporter", default=EXE)
    ap.add_argument("--args", default="", help="extra export arguments")
    ap.add_argument("--port", type=int, default=18531)
    ap.add_argument("--keep", help="copy the callgrind output file here")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_annotate"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt install valgrind)")
    sb, env = start_sandbox(EXE, a.port)
    try:
        with tempfile.TemporaryDirectory() as work:
            out, cg = os.path.join(work, "out"), os.path.join(work, "callgrind.out")
            r = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", a.exporter, "export",
                 "--provider", "custom", "--base-url", env["ENGATI_BASE_URL"], "--customer-id",
                 env["ENGATI_CUSTOMER_ID"], "--bot-key", env["ENGATI_BOT_KEY"], "--attribute",
                 "opt1=yes", "--since", "2026-03-01", "--until", "2026-08-28", "--format", "parquet",
                 "--out", out, "--max-rps", "100000", "--concurrency", "32", "--window", "60d",
                 "--quiet", *shlex.split(a.args)],
                env={**os.environ, **env}, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"export failed ({r.returncode}): {r.stderr[-2000:]}")
            with open(os.path.join(out, "_run_report.json")) as f:
                msgs = json.load(f)["messages"]["written"]
            if a.keep:
                shutil.copy(cg, a.keep)
            total, fns = inclusive(cg)
    finally:
        common.stop(sb)
    b = {k: bound(fns, v) for k, v in BOUNDS.items()}
    arrow = b["append"] + b["finish"] + b["by_day"]
    stages = {
        "parse": b["envelope"] + b["message"],
        "normalize": b["page"] - b["message"] - b["append"],
        "arrow": arrow,
        "parquet_encode": b["writer"] - b["zstd"],
        "zstd": b["zstd"],
        "http": b["http"] - b["envelope"],
    }
    stages["other"] = total - sum(stages.values())
    per = {k: v / msgs for k, v in stages.items()}
    print(f"{msgs} messages, {total / msgs:,.0f} instructions per message (user space)")
    for k, v in per.items():
        print(f"  {k:15} {v:8,.0f}  {100 * v * msgs / total:4.1f}%")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "exporter": a.exporter, "args": a.args, "messages": msgs,
                            "instructions_per_message": total / msgs,
                            "stages_per_message": per}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
