#!/usr/bin/env python3
"""Check that engati-etl and the dlt peer wrote the same messages (needs pyarrow: run it with the
python that setup.sh prints).

    compare_outputs.py RUST_OUT DLT_OUT

RUST_OUT is engati-etl's --out (messages/date=*/part-*.parquet), DLT_OUT the peer's --out
(data/engati/messages/*.parquet). Compares row counts and the multiset of
(channel_user_id, sent_at in ms, sender, message_type, content/response); exits 1 on a difference.
"""

import collections
import glob
import json
import os
import sys

import pyarrow.parquet as pq


def rows(files, content_col):
    c = collections.Counter()
    for f in files:
        t = pq.read_table(f, columns=["channel_user_id", "sent_at", "sender", "message_type",
                                      content_col])
        ts = t["sent_at"].cast("int64").to_pylist()  # us (dlt) or ms (rust): normalized below
        unit = 1000 if t.schema.field("sent_at").type.unit == "us" else 1
        for cuid, s, snd, mt, body in zip(t["channel_user_id"].to_pylist(), ts,
                                          t["sender"].to_pylist(), t["message_type"].to_pylist(),
                                          t[content_col].to_pylist()):
            c[(cuid, s // unit, snd, mt, body)] += 1
    return c


def main():
    rust_out, dlt_out = sys.argv[1:3]
    rf = glob.glob(os.path.join(rust_out, "messages", "**", "*.parquet"), recursive=True)
    df = glob.glob(os.path.join(dlt_out, "data", "engati", "messages", "*.parquet"))
    r, d = rows(rf, "content"), rows(df, "response")
    res = {"rust_rows": sum(r.values()), "dlt_rows": sum(d.values()),
           "rust_files": len(rf), "dlt_files": len(df),
           "only_rust": sum((r - d).values()), "only_dlt": sum((d - r).values())}
    res["same"] = res["only_rust"] == 0 and res["only_dlt"] == 0
    print(json.dumps(res))
    return 0 if res["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
