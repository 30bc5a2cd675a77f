"""Run pip with one line of progress instead of a silent minute (``make setup``, ``make demo``).

    python3 tools/pip_progress.py LOG PIP ARGS...

On a terminal the line names the package pip is at, rewritten in place; elsewhere (CI, a pipe)
one line every ten packages. pip's whole output goes to LOG; when pip fails, the end of it is
printed with LOG's name. Exits with pip's code. Standard library only: it runs before anything
is installed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

STEPS = ("Collecting ", "Building ", "Installing collected", "Successfully installed")
TAIL = 30


def _show(line: str, count: int, started: float, tty: bool) -> None:
    text = f"  [{time.monotonic() - started:4.0f}s] {count:3d} packages seen; {line[:80]}"
    if tty:
        sys.stdout.write(f"\r\033[K{text}")
        sys.stdout.flush()
    elif count % 10 == 0 or not line.startswith("Collecting"):
        print(text, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: pip_progress.py LOG PIP [ARGS...]", file=sys.stderr)
        return 2
    log, command = Path(argv[0]), argv[1:]
    tty = sys.stdout.isatty()
    started, count = time.monotonic(), 0
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--disable-pip-version-check"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            line = line.strip()
            if line.startswith(STEPS):
                count += line.startswith("Collecting")
                _show(line, count, started, tty)
        code = proc.wait()
    if tty:
        sys.stdout.write("\r\033[K")
    if code != 0:
        lines = log.read_text().splitlines()[-TAIL:]
        print("\n".join(lines), file=sys.stderr)
        print(f"pip failed (exit {code}); its whole output is in {log}", file=sys.stderr)
        return code
    print(f"  done in {time.monotonic() - started:.0f}s ({count} packages; pip's log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
