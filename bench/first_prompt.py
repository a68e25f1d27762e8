#!/usr/bin/env python3
"""Time to Aider's first prompt, for bench/run.sh.

  first_prompt.py db STATE_DB
      For the one agent job in a state dir's runner.db (opened read-only): seconds from the
      attempt's 'running' event (the container started) to the first transcript 'out' entry after
      which Aider's accumulated output ends in its prompt; also from the 'starting' event, and the
      attempt's whole duration. Prints: running_to_prompt starting_to_prompt attempt_seconds

  first_prompt.py phases STATE_DB
      For every agent job in the database (first attempt): seconds from 'starting' to 'running'
      (repository mirror and checkout, container launch), from 'running' to the first prompt, and
      from the first prompt to the attempt's end (manager turns, export, removal). Prints the
      median and the maximum of each: start_p50 start_max prompt_p50 prompt_max end_p50 end_max

  first_prompt.py baseline IMAGE LABEL
      `docker run --rm -i --network none IMAGE` starting Aider with the flags of docs/aider.md in a
      throwaway repository made inside the container; seconds from just before `docker run` to the
      first prompt. Then closes stdin (Aider exits 0). The container carries LABEL (key=value) so
      that an interrupted bench can remove it. Prints: seconds
"""
import os
import re
import select
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

# The prompt: `> ` (or a mode prefix such as `diff> `) at the end of the output, on its own line.
PROMPT = re.compile(r"(?:^|\n)[a-z]*> $")

AIDER_FLAGS = (
    "--model openai/gpt-4o-mini --openai-api-base http://127.0.0.1:9/v1 --openai-api-key x "
    "--model-metadata-file /etc/runner/aider-models.json --edit-format diff "
    "--no-fancy-input --no-pretty --yes-always --no-check-update --no-analytics "
    "--no-show-model-warnings --no-show-release-notes --no-gitignore --timeout 120"
)
TIMEOUT = 120


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def attempt_times(db, path, job, n):
    """(starting, running, first prompt) of one attempt, as Unix times."""

    def event(state):
        row = db.execute(
            "SELECT at FROM events WHERE job_id = ? AND attempt = ? AND state = ? ORDER BY seq LIMIT 1",
            (job, n, state),
        ).fetchone()
        if row is None:
            sys.exit(f"first_prompt: no '{state}' event for job {job} in {path}")
        return ts(row[0])

    text = ""
    for at, chunk in db.execute(
        "SELECT at, text FROM transcript WHERE job_id = ? AND attempt = ? AND direction = 'out' ORDER BY seq",
        (job, n),
    ):
        text += chunk
        if PROMPT.search(text):
            return event("starting"), event("running"), ts(at)
    sys.exit(f"first_prompt: Aider never showed its prompt in job {job} ({path})")


def open_db(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def from_db(path):
    db = open_db(path)
    rows = db.execute("SELECT job_id, n, started_at, finished_at FROM attempts").fetchall()
    if len(rows) != 1:
        sys.exit(f"first_prompt: expected one attempt in {path}, found {len(rows)}")
    job, n, started, finished = rows[0]
    starting, running, prompt = attempt_times(db, path, job, n)
    print(f"{prompt - running:.3f} {prompt - starting:.3f} {ts(finished) - ts(started):.3f}")


def phases(path):
    db = open_db(path)
    rows = db.execute("SELECT job_id, n, finished_at FROM attempts WHERE n = 1").fetchall()
    if not rows:
        sys.exit(f"first_prompt: no attempts in {path}")
    cols = [[], [], []]
    for job, n, finished in rows:
        starting, running, prompt = attempt_times(db, path, job, n)
        for col, value in zip(cols, (running - starting, prompt - running, ts(finished) - prompt)):
            col.append(value)
    out = []
    for col in cols:
        col.sort()
        out += [col[(len(col) - 1) // 2], col[-1]]
    print(" ".join(f"{v:.3f}" for v in out))


def baseline(image, label):
    script = (
        "set -e; cd /tmp; git init -q -b main r; cd r; "
        "git commit -q --allow-empty -m 'bench: empty start'; exec aider " + AIDER_FLAGS
    )
    argv = ["docker", "run", "--rm", "-i", "--network", "none", "--label", label,
            "-e", "LITELLM_LOCAL_MODEL_COST_MAP=True", "-e", "PYTHONUNBUFFERED=1", "-e", "TERM=dumb",
            image, "sh", "-c", script]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text, elapsed = b"", None
    fd = proc.stdout.fileno()
    while elapsed is None:
        left = TIMEOUT - (time.monotonic() - t0)
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        text += chunk
        if PROMPT.search(text.decode("utf-8", "replace")):
            elapsed = time.monotonic() - t0
    proc.stdin.close()  # EOF at the prompt: Aider exits
    try:
        proc.stdout.read()
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if elapsed is None:
        sys.stderr.write(text.decode("utf-8", "replace")[-2000:] + "\n")
        sys.exit(f"first_prompt: Aider showed no prompt within {TIMEOUT}s (exit {code})")
    if code != 0:
        sys.exit(f"first_prompt: the baseline container exited {code}")
    print(f"{elapsed:.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "db":
        from_db(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "phases":
        phases(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "baseline":
        baseline(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
