#!/usr/bin/env python3
"""Peer implementation of `engati-etl export` with dlt (dlt[parquet] 1.31.0), for benchmarks.

Same export as the Rust tool: the users that match one attribute filter, then for each user and
each 1-day UTC window in [since, until) the Conversations API pages (page_size 500) until a short
page, written as Parquet to a local filesystem destination. It prints one JSON line at the end:

    {"messages": N, "requests": R, "seconds": S, "messages_per_s": N/S, ...}

N is counted from the Parquet files this load wrote (pyarrow), R from a response hook on the HTTP
session, S is the wall time of `pipeline.run()` (extract + normalize + load).

Shape of the pipeline (dlt's REST API source, `rest_api_source(RESTAPIConfig)`):

    users (REST resource, data_selector "users", loaded as table `users`)
      -> user_windows (a dlt transformer, not loaded: one item per (user, 1-day window))
        -> conversations (REST child resource, path .../channel-user/{resources.user_windows.channel_user_id}/conversations,
                          start_date/end_date from the window, page_number paginator, parallelized=True)

Why a transformer for the windows: the REST API source has no notion of date-window stepping, and a
child resource makes exactly one paginated call sequence per parent item. dlt's documented way to
feed a child with values the API does not return is to put a plain dlt resource into the
`resources` list and reference it with `{resources.<name>.<field>}`. Our windows depend on the users
the API returns, so that plain resource is a transformer over `users`: the users endpoint is still
called once (dlt forks the parent pipe), the `users` table is still loaded like the Rust tool's, and
the child sees one item per (user, window), i.e. exactly the Rust tool's cells.
(The alternative, a `yield_map` processing step on `users`, would keep `{resources.users.*}` in the
path but would also turn the `users` table into one row per window.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import json
import os
import sys
import threading
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="API base URL, e.g. http://127.0.0.1:18200/")
    p.add_argument("--customer-id", required=True)
    p.add_argument("--bot-key", required=True)
    p.add_argument("--api-key-env", default="ENGATI_API_KEY",
                   help="name of the environment variable holding the API key")
    p.add_argument("--attribute", required=True, action="append", metavar="NAME=VALUE",
                   help="users whose attribute NAME equals VALUE (one filter)")
    p.add_argument("--since", required=True, help="YYYY-MM-DD, inclusive (UTC midnight)")
    p.add_argument("--until", required=True, help="YYYY-MM-DD, exclusive (UTC midnight)")
    p.add_argument("--out", required=True, help="output directory (dlt filesystem bucket)")
    p.add_argument("--workers", type=int, default=32,
                   help="extract threads = HTTP requests in flight at most")
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--window-days", type=int, default=1,
                   help="window length in days; windows lie on the Rust tool's grid (aligned to "
                        "the Unix epoch, clipped to [since, until)), as `--window Nd` plans them")
    p.add_argument("--paginator", choices=["short-page", "empty-page"], default="short-page",
                   help="short-page: dlt's PageNumberPaginator subclassed to stop on a page shorter "
                        "than page_size (same requests as the Rust tool); empty-page: the stock "
                        "page_number paginator, total_path=None, stop_after_empty_page=True "
                        "(one extra request per window)")
    p.add_argument("--max-parallel-items", type=int, default=0,
                   help="extract.max_parallel_items (0 = 2 x workers)")
    p.add_argument("--normalize-workers", type=int, default=1)
    p.add_argument("--buffer-max-items", type=int, default=50_000)
    p.add_argument("--trust-env", action="store_true",
                   help="keep requests' Session.trust_env=True (its default): proxy/netrc settings "
                        "are re-read from the environment on every request (slower)")
    p.add_argument("--string-data-selector", action="store_true",
                   help="give data_selector as the string 'conversations' (as in dlt's examples) "
                        "instead of a pre-compiled JSONPath (slower)")
    p.add_argument("--no-users-table", action="store_true",
                   help="do not load the users table (only messages)")
    a = p.parse_args(argv)
    if len(a.attribute) != 1:
        p.error("this peer supports exactly one --attribute filter")
    if "=" not in a.attribute[0]:
        p.error("--attribute must be NAME=VALUE")
    return a


def configure_dlt(a) -> None:
    """dlt performance settings, as env vars (dlt reads SECTION__KEY). They must be set before the
    pipeline is created. See dlt docs, "Optimizing dlt" (reference/performance)."""
    workers = max(1, a.workers)
    settings = {
        # Parallelized resources/transformers run their deferred items in a thread pool of this
        # size: for an I/O-bound child this is the number of HTTP requests in flight
        # (the Rust tool's --concurrency).
        "EXTRACT__WORKERS": workers,
        # How many deferred items (one per (user, window) here) may be pending at once. It must
        # be >= workers or the pool starves; 2x keeps the threads busy while the main thread
        # resolves futures, runs add_map and writes the buffer.
        "EXTRACT__MAX_PARALLEL_ITEMS": a.max_parallel_items or 2 * workers,
        # The extract writer buffers this many items in memory before it writes to the
        # intermediate file: larger buffers mean fewer, larger writes (default 5000).
        "DATA_WRITER__BUFFER_MAX_ITEMS": a.buffer_max_items,
        # Do not rotate files by item count / size at these volumes: one intermediate file
        # per table, one Parquet file per table (rotation is only useful for parallel
        # normalize/load of big tables; here it would just add files and jobs).
        "DATA_WRITER__FILE_MAX_ITEMS": 5_000_000,
        "DATA_WRITER__FILE_MAX_BYTES": 1 << 30,
        # Normalize runs in a process pool when > 1 worker. With one file per table there is
        # nothing to split, and 2 workers measured 0.5-1 s slower on this 2-core box (process
        # start-up), so 1: it then runs in-process.
        "NORMALIZE__WORKERS": a.normalize_workers,
        # Loader: local filesystem copies, a few jobs; let them all run at once.
        "LOAD__WORKERS": 8,
        # No telemetry (no outbound network here; it would also add a thread and a request).
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "RUNTIME__LOG_LEVEL": "WARNING",
        # dlt's HTTP client: same timeout as the Rust tool, its default retries kept.
        "RUNTIME__REQUEST_TIMEOUT": 30,
        # Parquet written by the normalizer (pyarrow): zstd like the Rust tool (dlt's default is
        # pyarrow's snappy).
        "NORMALIZE__DATA_WRITER__COMPRESSION": "zstd",
    }
    for k, v in settings.items():
        os.environ.setdefault(k, str(v))


def day_windows(since: str, until: str, days: int = 1):
    """The Rust tool's plan: `days`-day UTC windows [start_ms, end_ms) on a grid aligned to the
    Unix epoch, clipped to [since, until) (1-day windows by default)."""
    day_ms = 86_400_000
    step = days * day_ms
    s = int(dt.datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()) * 1000
    u = int(dt.datetime.strptime(until, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()) * 1000
    out = []
    while s < u:
        e = min((s // step + 1) * step, u)
        day = dt.datetime.fromtimestamp(s / 1000, dt.timezone.utc).date().isoformat()
        out.append((s, e, day))
        s = e
    return out


def parse_engati_ts(v):
    """Engati timestamps: `2026-08-12 14:03:27.512+0530` or `2026/08/12 ...` (also ISO/RFC 3339
    and epoch ms), to an aware UTC datetime. Python 3.11's fromisoformat reads the +HHMM offset."""
    if isinstance(v, (int, float)) or (isinstance(v, str) and v.isdigit()):
        ms = int(v)
        if ms < 10**11:
            ms *= 1000
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    t = dt.datetime.fromisoformat(v.replace("/", "-", 2))
    if t.tzinfo is None:
        raise ValueError(f"timestamp {v!r} has no UTC offset")
    return t.astimezone(dt.timezone.utc)


def main(argv=None) -> int:
    a = parse_args(argv)
    configure_dlt(a)

    import dlt
    from dlt.common.jsonpath import compile_path
    from dlt.sources.helpers.requests import Client
    from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator
    from dlt.sources.rest_api import RESTAPIConfig, rest_api_resources, rest_api_source

    api_key = os.environ.get(a.api_key_env)
    if not api_key:
        print(f"error: environment variable {a.api_key_env} is empty", file=sys.stderr)
        return 2
    attr_name, attr_value = a.attribute[0].split("=", 1)
    windows = day_windows(a.since, a.until, a.window_days)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)

    class ShortPagePaginator(PageNumberPaginator):
        """dlt's page_number paginator (base_page 1) that also stops on a page shorter than the
        page size, as the Engati API documents (no total, no has_more). dlt's stock options stop
        only on an empty page, which costs one extra request per window."""

        def __init__(self, page_size: int):
            super().__init__(base_page=1, page_param="page_number", total_path=None,
                             stop_after_empty_page=True)
            self.page_size = page_size

        def update_state(self, response, data=None):
            super().update_state(response, data)
            if data is not None and len(data) < self.page_size:
                self._has_next_page = False

    if a.paginator == "short-page":
        paginator = ShortPagePaginator(a.page_size)
    else:
        paginator = {"type": "page_number", "base_page": 1, "page_param": "page_number",
                     "total_path": None, "stop_after_empty_page": True}

    # One HTTP session for all resources: dlt's own retrying session (what RESTClient makes by
    # default), with a connection pool as large as the worker count, mounted on an HTTPAdapter
    # that counts every request sent on the wire (retries included). A session-level response
    # hook would not work: RESTClient.paginate always sets request-level response hooks, and
    # requests then drops the session's.
    from requests.adapters import HTTPAdapter

    requests_seen = [0]
    count_lock = threading.Lock()

    class CountingAdapter(HTTPAdapter):
        def send(self, request, *args, **kwargs):
            with count_lock:
                requests_seen[0] += 1
            return super().send(request, *args, **kwargs)

    session = Client(raise_for_status=False).session
    adapter = CountingAdapter(pool_connections=1, pool_maxsize=max(10, a.workers))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # requests re-reads proxy settings from os.environ (getproxies + proxy_bypass, a walk over
    # the whole environment) for every request when trust_env is on: about a third of the
    # extract's CPU in our A/B. No proxy is involved on loopback; the Rust tool reads its proxy settings once.
    session.trust_env = a.trust_env

    base = f"bot-api/v1.0/customer/{a.customer_id}/bot/{a.bot_key}"
    client = {
        "base_url": a.base_url,
        # The key is sent as is after "Basic " (it is not user:password base64).
        "auth": {"type": "api_key", "name": "Authorization", "api_key": f"Basic {api_key}",
                 "location": "header"},
        "session": session,
    }

    (users,) = rest_api_resources({
        "client": client,
        "resources": [{
            "name": "users",
            "endpoint": {
                "path": f"{base}/users",
                "params": {"attribute_name": attr_name, "attribute_value": attr_value},
                "data_selector": "users",
                "paginator": "single_page",  # the Users API is not paginated
            },
            "write_disposition": "replace",
            "selected": not a.no_users_table,
        }],
    })

    @dlt.transformer(data_from=users, name="user_windows", selected=False)
    def user_windows(users_page):
        # One item per (user, window): the cells of the Rust tool's plan. Yielded as one list
        # so the parallelized child gets them in one call and fans them out to the thread pool.
        yield [
            {"channel_user_id": u["channel_user_id"], "channel": u.get("channel"),
             "start_ms": s, "end_ms": e, "day": day}
            for u in users_page for (s, e, day) in windows
        ]

    config: RESTAPIConfig = {
        "client": client,
        "resources": [
            users,
            user_windows,
            {
                "name": "conversations",
                "table_name": "messages",
                "endpoint": {
                    "path": f"{base}/channel-user/{{resources.user_windows.channel_user_id}}/conversations",
                    "params": {
                        "start_date": "{resources.user_windows.start_ms}",
                        "end_date": "{resources.user_windows.end_ms}",
                        "page_size": a.page_size,
                    },
                    # Pre-compiled: dlt re-parses a string data_selector with jsonpath_ng on
                    # every response (it builds a PLY lexer+parser each time, ~1/4 of the CPU
                    # of the extract in a profile); a compiled JSONPath is used as is.
                    "data_selector": ("conversations" if a.string_data_selector
                                      else compile_path("conversations")),
                    "paginator": paginator,
                },
                # channel_user_id/channel are not in the messages: copy them from the parent.
                "include_from_parent": ["channel_user_id", "channel"],
                # Each (user, window) is fetched in the extract thread pool (EXTRACT__WORKERS).
                "parallelized": True,
                "write_disposition": "replace",
                # `file`/`attachments` are null in most messages: declare them so they are
                # kept as columns even when all values are null, like the raw fields in Rust.
                "columns": {
                    "sent_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
                    "message_id": {"data_type": "text", "nullable": False},
                    "timestamp": {"data_type": "text"},
                    "file": {"data_type": "json"},
                    "attachments": {"data_type": "json"},
                },
            },
        ],
    }
    # max_table_nesting=0: nested objects (`file`, user `attributes`) stay one JSON column instead
    # of being unpacked into child tables/columns: keeps the raw fields, and is less normalize work.
    source = rest_api_source(config, name="engati", max_table_nesting=0)

    bot_key = a.bot_key

    def normalize_message(m):
        # Small add_map: parent fields renamed, sent_at parsed, a deterministic message_id
        # (hash of bot, user, instant, sender, type, content), all raw fields kept.
        m["channel_user_id"] = cuid = m.pop("_user_windows_channel_user_id")
        m["channel"] = m.pop("_user_windows_channel")
        sent = parse_engati_ts(m.get("timestamp"))
        m["sent_at"] = sent
        h = hashlib.blake2b(digest_size=16)
        h.update("\x1f".join((bot_key, cuid, str(int(sent.timestamp() * 1000)),
                              str(m.get("sender")), str(m.get("message_type")),
                              str(m.get("response")))).encode())
        m["message_id"] = h.hexdigest()
        return m

    source.resources["conversations"].add_map(normalize_message)

    pipeline = dlt.pipeline(
        pipeline_name="engati_dlt_peer",
        pipelines_dir=os.path.join(out, "_dlt_pipelines"),
        destination=dlt.destinations.filesystem(f"file://{out}/data"),
        dataset_name="engati",
    )

    t0 = time.perf_counter()
    info = pipeline.run(source, loader_file_format="parquet")
    seconds = time.perf_counter() - t0

    # Count what was loaded: the messages Parquet files of this load, read back with pyarrow.
    import pyarrow.parquet as pq

    load_id = info.loads_ids[-1]
    files = sorted(glob.glob(os.path.join(out, "data", "engati", "messages", f"{load_id}.*.parquet")))
    messages = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    ufiles = glob.glob(os.path.join(out, "data", "engati", "users", f"{load_id}.*.parquet"))
    users_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in ufiles)

    summary = {
        "messages": messages,
        "requests": requests_seen[0],
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds, 1) if seconds > 0 else None,
        "users": users_rows,
        "windows": len(windows),
        "message_files": len(files),
        "workers": a.workers,
        "paginator": a.paginator,
        "dlt": dlt.__version__,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
