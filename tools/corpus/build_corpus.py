#!/usr/bin/env python3
"""Build the sandbox conversation corpus (src/sandbox/corpus.jsonl).

The engati-etl test sandbox emulates a chatbot platform's API and needs
realistic human conversation text. This script distils two permissively
licensed PyPI data packages into one small, deterministic JSONL file:

* chitchat-dataset==0.9.0   (MIT)   real English human-human chats with
  real ISO-8601 timestamps (BYU PCC lab's Chit-Chat Challenge).
* chatterbot-corpus==1.3.3  (BSD-3-Clause) short scripted dialogues in 28
  languages, including english/tech_support.yml.

Usage (from the repository root)::

    python3 tools/corpus/build_corpus.py --out src/sandbox/corpus.jsonl

If ``yaml``, ``chitchat_dataset`` and ``chatterbot_corpus`` are not
importable, the script creates a throw-away venv under a temp directory,
``pip install``s the pinned packages (PyYAML, chitchat-dataset==0.9.0,
chatterbot-corpus==1.3.3) into it, re-runs itself with that venv's
interpreter and deletes the venv afterwards. Alternatives:

    --python-site DIR   prepend DIR (a site-packages holding the three
                        packages) to sys.path instead of creating a venv
    --venv-dir DIR      create/reuse the venv in DIR and keep it

The package versions are checked; a different version is an error (the
output would change), unless --allow-other-versions is given.

Output: one conversation per line, UTF-8, compact JSON, keys in this order::

    {"src":"chitchat"|"chatterbot","lang":"en"|"hi"|...,"topic":"...",
     "turns":[[speaker, offset_ms, "text"], ...]}

* speaker 0 = whoever sent the first message (plays the end user),
  speaker 1 = the other party (plays the bot/agent).
* offset_ms: integer ms since the conversation's first message,
  non-decreasing. chitchat: from the real timestamps (a missing or
  backwards timestamp becomes previous + 1000 ms; any single gap is capped
  at 6 h). chatterbot has no timestamps: gaps are synthesised from a
  per-conversation seeded RNG, 2-40 s before a speaker-1 message and
  5-120 s before a speaker-0 message.
* text: the original message, stripped; empty messages are dropped.
  chitchat messages stay individual (a turn of 3 messages -> 3 entries).
* topic: chatterbot's YAML file stem (e.g. "tech_support"); "" for chitchat.

Selection (seed SEED below, fixed):

* chitchat: conversations whose non-empty messages number 4..60 and come
  from exactly two senders (3,150 of the 7,168 chats have one sender only:
  nobody answered). CHITCHAT_N of them are drawn round-robin across the
  dataset's 36 conversation prompts for variety; within a prompt, a
  weighted draw without replacement (Efraimidis-Spirakis keys u**len) picks
  a chat with probability inversely proportional to its message count, so
  all lengths 4..60 occur while the file stays inside its 250-600 KB
  budget (a uniform draw would make the chitchat part alone ~650 KB).
  Written in dataset order.
* chatterbot: exact duplicate conversations within one YAML file are
  dropped (first kept): english/tech_support.yml holds 1,050 entries but
  only 10 distinct conversations, each repeated 88-121 times.
* chatterbot english: every distinct conversation in tech_support.yml.
* chatterbot, every other language folder present: up to PER_LANG_N
  conversations of >= 2 string utterances, drawn round-robin across the
  language's topic files (each file's pool shuffled by the seeded RNG).
  Malformed entries (a bare string instead of a list, a single utterance,
  a non-string utterance such as a YAML 1.1 boolean) are skipped.
* Both sources: a conversation with an e-mail address in any message is
  skipped (persian/profile.yml names its translators with their personal
  addresses).
* lang: ISO 639-1 code where one exists, otherwise the folder name
  (hinglish, traditionalchinese).

Statistics are printed at the end.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

SEED = 20240607
CHITCHAT_N = 450
CHITCHAT_MIN_MSGS = 4
CHITCHAT_MAX_MSGS = 60
PER_LANG_N = 25
MAX_GAP_MS = 6 * 3600 * 1000
FALLBACK_GAP_MS = 1000
BOT_GAP_MS = (2_000, 40_000)   # before a speaker-1 message (synthetic)
USER_GAP_MS = (5_000, 120_000)  # before a speaker-0 message (synthetic)

PINS = {
    "chitchat-dataset": "0.9.0",
    "chatterbot-corpus": "1.3.3",
}
PIP_REQS = ["PyYAML>=6,<7"] + [f"{k}=={v}" for k, v in PINS.items()]

# chatterbot-corpus folder -> language code (ISO 639-1 where one exists).
LANG_CODES = {
    "bengali": "bn",
    "chinese": "zh",
    "dutch": "nl",
    "english": "en",
    "french": "fr",
    "german": "de",
    "hebrew": "he",
    "hindi": "hi",
    "hinglish": "hinglish",  # Hindi-English mix in Latin script; no ISO 639-1 code
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "marathi": "mr",
    "oriya": "or",
    "persian": "fa",
    "portuguese": "pt",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "tamil": "ta",
    "telugu": "te",
    "thai": "th",
    "traditionalchinese": "traditionalchinese",  # no own ISO 639-1 code (zh-Hant in BCP 47)
    "turkish": "tr",
    "ukrainian": "uk",
    "urdu": "ur",
    "yoruba": "yo",
}
MUST_HAVE = ["hindi", "tamil", "urdu", "bengali", "telugu", "chinese",
             "japanese", "persian", "russian", "korean"]

_REEXEC_ENV = "ENGATI_CORPUS_REEXEC"

# Conversations quoting an e-mail address are left out (persian/profile.yml
# lists its translators' personal addresses; 2 chitchat messages hold one).
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------

def _importable() -> bool:
    try:
        import yaml  # noqa: F401
        import chitchat_dataset  # noqa: F401
        import chatterbot_corpus  # noqa: F401
    except ImportError:
        return False
    return True


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ensure_venv(venv: Path) -> Path:
    py = _venv_python(venv)
    if not py.exists():
        print(f"[build_corpus] creating venv in {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    check = subprocess.run(
        [str(py), "-c", "import yaml, chitchat_dataset, chatterbot_corpus"],
        capture_output=True)
    if check.returncode != 0:
        print(f"[build_corpus] pip install {' '.join(PIP_REQS)}", file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *PIP_REQS], check=True)
    return py


def _reexec_in(py: Path) -> int:
    env = dict(os.environ)
    env[_REEXEC_ENV] = "1"
    return subprocess.run([str(py), os.path.abspath(__file__), *sys.argv[1:]],
                          env=env).returncode


def _check_versions(allow_other: bool) -> dict[str, str]:
    from importlib import metadata
    found = {}
    for name, want in PINS.items():
        have = metadata.version(name)
        found[name] = have
        if have != want:
            msg = f"{name} is {have}, expected {want}: the output will differ"
            if not allow_other:
                sys.exit(f"[build_corpus] error: {msg} (--allow-other-versions to proceed)")
            print(f"[build_corpus] warning: {msg}", file=sys.stderr)
    found["PyYAML"] = metadata.version("PyYAML")
    return found


# --------------------------------------------------------------------------
# chitchat-dataset
# --------------------------------------------------------------------------

def _parse_ts(value) -> _dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    return ts


def chitchat_turns(conv: dict) -> list[list] | None:
    """[[speaker, offset_ms, text], ...] or None if the chat is unusable."""
    msgs = []
    for turn in conv.get("messages") or []:
        for m in turn or []:
            text = m.get("text")
            if not isinstance(text, str):
                continue
            text = text.strip()
            if not text:
                continue
            msgs.append((m.get("sender"), _parse_ts(m.get("timestamp")), text))
    if not msgs:
        return None
    senders = {s for s, _, _ in msgs}
    if len(senders) != 2 or None in senders:
        return None
    if any(EMAIL_RE.search(text) for _, _, text in msgs):
        return None
    opener = msgs[0][0]
    out = []
    prev_ts = None
    offset = 0
    for i, (sender, ts, text) in enumerate(msgs):
        if i > 0:
            if ts is None or prev_ts is None or ts < prev_ts:
                gap = FALLBACK_GAP_MS
            else:
                gap = int((ts - prev_ts).total_seconds() * 1000)
            offset += min(gap, MAX_GAP_MS)
        if ts is not None and (prev_ts is None or ts >= prev_ts):
            prev_ts = ts
        out.append([0 if sender == opener else 1, offset, text])
    return out


def select_chitchat(dataset: dict, rng: random.Random) -> tuple[list[dict], int]:
    by_prompt: dict[str, list[tuple[int, list]]] = defaultdict(list)
    for pos, cid in enumerate(dataset):
        turns = chitchat_turns(dataset[cid])
        if turns is None or not (CHITCHAT_MIN_MSGS <= len(turns) <= CHITCHAT_MAX_MSGS):
            continue
        prompt = dataset[cid].get("prompt")
        by_prompt[prompt if isinstance(prompt, str) else ""].append((pos, turns))
    pools = []
    for prompt in sorted(by_prompt):
        # Efraimidis-Spirakis weighted sampling, weight 1/len: key = u ** len,
        # compared as len * log(u); the highest keys are popped first.
        keyed = []
        for pos, turns in by_prompt[prompt]:
            u = 1.0 - rng.random()  # (0, 1]
            keyed.append((len(turns) * math.log(u), pos, turns))
        keyed.sort(key=lambda k: (k[0], k[1]))
        pools.append([(pos, turns) for _, pos, turns in keyed])
    picked: list[tuple[int, list]] = []
    while len(picked) < CHITCHAT_N and any(pools):
        for pool in pools:
            if pool and len(picked) < CHITCHAT_N:
                picked.append(pool.pop())
    picked.sort(key=lambda p: p[0])
    eligible = sum(len(v) for v in by_prompt.values())
    return ([{"src": "chitchat", "lang": "en", "topic": "", "turns": t} for _, t in picked],
            eligible)


# --------------------------------------------------------------------------
# chatterbot-corpus
# --------------------------------------------------------------------------

def _load_yaml_convs(path: Path) -> tuple[list[list[str]], int, int]:
    import yaml
    with path.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    good, bad, dups, seen = [], 0, 0, set()
    for conv in (doc or {}).get("conversations") or []:
        if not isinstance(conv, list) or not all(isinstance(u, str) for u in conv):
            bad += 1
            continue
        utts = [u.strip() for u in conv if u.strip()]
        if len(utts) < 2:
            bad += 1
            continue
        if any(EMAIL_RE.search(u) for u in utts):
            bad += 1
            continue
        if tuple(utts) in seen:
            dups += 1
            continue
        seen.add(tuple(utts))
        good.append(utts)
    return good, bad, dups


def chatterbot_turns(utts: list[str], key: str) -> list[list]:
    rng = random.Random(f"{SEED}:{key}")
    out = []
    offset = 0
    for i, text in enumerate(utts):
        speaker = i % 2
        if i > 0:
            lo, hi = BOT_GAP_MS if speaker == 1 else USER_GAP_MS
            offset += rng.randint(lo, hi)
        out.append([speaker, offset, text])
    return out


def select_chatterbot(data_dir: Path, rng: random.Random) -> tuple[list[dict], Counter]:
    records: list[dict] = []
    skipped: Counter = Counter()
    folders = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    unknown = [f for f in folders if f not in LANG_CODES]
    if unknown:
        print(f"[build_corpus] note: unmapped language folders {unknown}; "
              "using the folder name as lang", file=sys.stderr)
    missing = [f for f in MUST_HAVE if f not in folders]
    if missing:
        print(f"[build_corpus] warning: language folders missing: {missing}", file=sys.stderr)

    # English: all of tech_support.yml, in file order.
    ts_path = data_dir / "english" / "tech_support.yml"
    convs, bad, dups = _load_yaml_convs(ts_path)
    skipped["malformed or e-mail"] += bad
    skipped["duplicate"] += dups
    skipped["duplicate in english/tech_support"] += dups
    for i, utts in enumerate(convs):
        records.append({"src": "chatterbot", "lang": "en", "topic": "tech_support",
                        "turns": chatterbot_turns(utts, f"english/tech_support/{i}")})

    for folder in folders:
        if folder == "english":
            continue
        lang = LANG_CODES.get(folder, folder)
        pools = []
        for f in sorted((data_dir / folder).glob("*.yml")):
            convs, bad, dups = _load_yaml_convs(f)
            skipped["malformed or e-mail"] += bad
            skipped["duplicate"] += dups
            pool = [(f.stem, i, u) for i, u in enumerate(convs)]
            rng.shuffle(pool)
            pools.append(pool)
        picked = []
        while len(picked) < PER_LANG_N and any(pools):
            for pool in pools:
                if pool and len(picked) < PER_LANG_N:
                    picked.append(pool.pop())
        picked.sort(key=lambda p: (p[0], p[1]))
        for topic, i, utts in picked:
            records.append({"src": "chatterbot", "lang": lang, "topic": topic,
                            "turns": chatterbot_turns(utts, f"{folder}/{topic}/{i}")})
    return records, skipped


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def encode(rec: dict) -> str:
    return json.dumps({"src": rec["src"], "lang": rec["lang"], "topic": rec["topic"],
                       "turns": rec["turns"]},
                      ensure_ascii=False, separators=(",", ":"))


def print_stats(records: list[dict], data: bytes, out: Path, versions: dict,
                skipped: Counter) -> None:
    convs = Counter()
    msgs = Counter()
    for r in records:
        convs[(r["src"], r["lang"])] += 1
        msgs[(r["src"], r["lang"])] += len(r["turns"])
    all_msgs = [(r, t) for r in records for t in r["turns"]]
    non_ascii = sum(1 for _, t in all_msgs if not t[2].isascii())
    longest_r, longest_t = max(all_msgs, key=lambda rt: len(rt[1][2]))
    print(f"wrote {out}  ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    print("versions: " + ", ".join(f"{k}=={v}" for k, v in sorted(versions.items()))
          + f"; seed {SEED}")
    print(f"{'src':<11} {'lang':<19} {'convs':>6} {'msgs':>6}")
    for src in ("chitchat", "chatterbot"):
        for (s, lang) in sorted(k for k in convs if k[0] == src):
            print(f"{s:<11} {lang:<19} {convs[(s, lang)]:>6} {msgs[(s, lang)]:>6}")
        tc = sum(v for k, v in convs.items() if k[0] == src)
        tm = sum(v for k, v in msgs.items() if k[0] == src)
        print(f"{src:<11} {'(total)':<19} {tc:>6} {tm:>6}")
    print(f"{'ALL':<11} {'':<19} {len(records):>6} {len(all_msgs):>6}")
    print(f"languages: {len({r['lang'] for r in records})}; "
          f"chatterbot entries skipped (all read files): "
          + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    print(f"max message length: {len(longest_t[2])} chars "
          f"({longest_r['src']}/{longest_r['lang']}/{longest_r['topic'] or '-'})")
    print(f"max offset: {max(r['turns'][-1][1] for r in records)} ms")
    print(f"non-ASCII messages: {non_ascii}/{len(all_msgs)} "
          f"({100.0 * non_ascii / max(1, len(all_msgs)):.1f}%)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="src/sandbox/corpus.jsonl", type=Path)
    ap.add_argument("--python-site", action="append", default=[],
                    help="site-packages dir with the packages (repeatable)")
    ap.add_argument("--venv-dir", type=Path,
                    help="create/reuse the venv here and keep it")
    ap.add_argument("--allow-other-versions", action="store_true")
    args = ap.parse_args()

    for site in args.python_site:
        sys.path.insert(0, os.path.abspath(site))

    if not _importable():
        if os.environ.get(_REEXEC_ENV):
            sys.exit("[build_corpus] error: packages still not importable in the venv")
        if args.python_site:
            sys.exit("[build_corpus] error: packages not importable from --python-site")
        if args.venv_dir:
            return _reexec_in(_ensure_venv(args.venv_dir.resolve()))
        tmp = Path(tempfile.mkdtemp(prefix="engati-corpus-venv-"))
        try:
            return _reexec_in(_ensure_venv(tmp / "venv"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    versions = _check_versions(args.allow_other_versions)

    import chitchat_dataset
    from chatterbot_corpus.corpus import DATA_DIRECTORY

    rng = random.Random(SEED)
    cc_path = Path(chitchat_dataset.__file__).resolve().parent / "dataset.json"
    with cc_path.open(encoding="utf-8") as fh:
        dataset = json.load(fh)
    records, eligible = select_chitchat(dataset, rng)
    cb_records, skipped = select_chatterbot(Path(DATA_DIRECTORY), rng)
    records += cb_records

    data = "".join(encode(r) + "\n" for r in records).encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, args.out)
    print(f"chitchat: {eligible} of {len(dataset)} chats eligible "
          f"(2 senders, {CHITCHAT_MIN_MSGS}..{CHITCHAT_MAX_MSGS} messages, no e-mail)")
    print_stats(records, data, args.out, versions, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
