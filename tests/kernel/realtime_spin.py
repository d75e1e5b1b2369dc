"""Test-only fault: `inspector run` whose infer thread turns into a busy loop after N frames.

python -m tests.kernel.realtime_spin N <inspector run arguments...>

The loop is numpy work on a 32 MB array: CPU only, no system call, and the GIL released (a loop in
Python would block on the GIL whenever another thread wants it, and a blocked thread is not a spinning
one for the kernel). Under SCHED_FIFO it is what a real-time thread gone wrong looks like.
"""

import sys

import numpy as np

from inspector.inference import runner


def main() -> int:
    spin_after = int(sys.argv[1])
    submit = runner.Runner.submit
    calls = [0]

    def spinning_submit(self, image, userdata, wait_s=None):
        calls[0] += 1
        if calls[0] > spin_after:
            print(f"SPINNING after {spin_after} frames", file=sys.stderr, flush=True)
            a = np.ones(4_000_000)
            while True:
                np.sqrt(a, out=a)
        return submit(self, image, userdata, wait_s)

    runner.Runner.submit = spinning_submit
    from inspector.cli import main as cli

    sys.argv = ["inspector", *sys.argv[2:]]
    return cli()


if __name__ == "__main__":
    sys.exit(main())
