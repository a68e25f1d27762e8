#!/usr/bin/env python3
"""A deterministic repository of realistic size for bench/run.sh, as a `git fast-import` stream.

  gen_repo.py FILES COMMITS CHANGED_PER_COMMIT | git -C REPO fast-import --quiet

Source-like text files (4-40 KB each, under src/pkgN/) on branch main; the first commit adds all
of them, each later one rewrites CHANGED_PER_COMMIT of them. 300 files, 300 commits, 6 per commit
give about 23 MB of packed history and a 7 MB work tree in about 3 s.
"""
import random
import sys

rnd = random.Random(42)
WORDS = ["def", "return", "self", "if", "else", "for", "in", "import", "from", "class", "None",
         "True", "False", "value", "result", "config", "request", "response", "items", "index",
         "count", "error", "name", "path", "data", "buffer", "token", "state", "handler", "context",
         "logger", "parse", "render", "update", "create", "delete", "user", "session", "cache",
         "queue", "worker", "job", "event", "stream", "client", "server", "timeout", "retry"]
WORDS += ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randint(3, 12)))
          for _ in range(3000)]


def content(kb):
    out, size = [], 0
    while size < kb * 1024:
        line = "    " * rnd.randint(0, 3) + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 12))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()


def main():
    nfiles, commits, per = (int(a) for a in sys.argv[1:4])
    files = [f"src/pkg{i % 20}/mod_{i}.py" for i in range(nfiles)]
    w = sys.stdout.buffer
    when = 1_700_000_000
    for n in range(commits):
        when += 3600
        changed = files if n == 0 else rnd.sample(files, per)
        msg = f"change {n}\n".encode()
        w.write(b"commit refs/heads/main\n")
        w.write(f"committer Bench <bench@example.com> {when} +0000\n".encode())
        w.write(b"data %d\n%s" % (len(msg), msg))
        for path in changed:
            data = content(rnd.randint(4, 40))
            w.write(f"M 100644 inline {path}\n".encode())
            w.write(b"data %d\n" % len(data))
            w.write(data)
            w.write(b"\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main()
