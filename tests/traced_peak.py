"""Peak Python memory of one CLI command, measured in a fresh interpreter.

tracemalloc counts the allocations of every thread of the process. In a pytest worker, threads that
earlier tests left running are counted as well. In fresh-clone run 47, a merge measured in-process had a
peak of 9.1 MB; alone it has 1.8 MB. In a child process, only the command's own allocations count. The
tracing starts after the imports the command needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, tracemalloc
import cv2, numpy
from inspector.cli import main
import inspector.training.dataset_import, inspector.training.merge
tracemalloc.start()
rc = main(json.loads(sys.argv[1]))
print("TRACED-PEAK", rc, tracemalloc.get_traced_memory()[1])
"""


def cli_peak(args: list[str], cwd: Path) -> tuple[int, int]:
    """(exit code, peak traced bytes) of `inspector <args>`, run in a child process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([str(a) for a in args])], capture_output=True,
                       text=True, cwd=cwd, env=env, timeout=300)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("TRACED-PEAK ")), None)
    assert r.returncode == 0 and line is not None, f"exit {r.returncode}\n{(r.stdout + r.stderr)[-3000:]}"
    _, rc, peak = line.split()
    return int(rc), int(peak)
