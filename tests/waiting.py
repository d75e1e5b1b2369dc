"""Waiting on an event a test cannot subscribe to: poll the condition, fail naming it."""

import time


def wait_for(cond, timeout: float = 60.0, what="condition"):
    """Returns `cond()`'s first truthy value; fails with `what` after `timeout` seconds (`what` may be a
    callable, called then: the state worth showing at the failure)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
