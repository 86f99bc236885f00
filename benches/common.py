"""Shared by the benchmark scripts: the sandbox as a process of its own.

`start_sandbox(exe, *args)` runs `exe sandbox --seed 42 -q ARGS...` and reads the four
`ENGATI_*=...` lines it prints first (base URL, customer id, bot key, API key); `stop(p)` ends
a process started here (or any `subprocess.Popen`).
"""

import subprocess


def start_sandbox(exe, *args):
    """Starts the sandbox with `args` (strings) after `--seed 42 -q`; returns (process, env),
    env holding the four ENGATI_* variables an export needs."""
    p = subprocess.Popen([exe, "sandbox", "--seed", "42", "-q", *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    env = {}
    while len(env) < 4:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("the sandbox exited early")
        key, _, value = line.strip().partition("=")
        env[key] = value
    return p, env


def stop(p):
    """Terminates `p`, killing it after 10 s."""
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
