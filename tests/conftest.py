"""Shared fixtures. Real parts live in tests/fixtures/: a private Mosquitto, an S3-compatible
server and an RTSP server, each on a free loopback port, started per test session.

Under CI (`CI` set to anything but 0/false/no) a skip is a failure: a part that `make test` installs
(Mosquitto, mosquitto_sub, the RTSP server, Aravis, Chromium, Label Studio, ultralytics, ...) and that
is missing means a broken install step, and a skip would hide it. Only the reasons in ALLOWED_SKIPS
stay skips there."""

import os

import pytest

# Nothing in the test suite may reach the network or phone home.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("OPENVINO_TELEMETRY_ENABLE", "0")

pytest_plugins = [
    "tests.fixtures.mqtt_broker",
    "tests.fixtures.s3_server",
    "tests.fixtures.rtsp_server",
    "tests.fixtures.genicam_camera",
    "tests.repo_guard",
]

# Skips that stay skips under CI, each a case no install step can change. CI runs as root, so the one
# below fires only for a developer who runs CI=true as another user.
ALLOWED_SKIPS = (
    "needs root to act as another user",  # lifecycle/test_control.py: the control socket refuses another uid
)


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(rep) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr)


def _fail_the_skip(rep, where: str) -> None:
    reason = _skip_reason(rep)
    if any(a in reason for a in ALLOWED_SKIPS):
        return
    rep.outcome = "failed"
    rep.longrepr = (f"{where} skipped under CI ({reason.removeprefix('Skipped: ')}): `make test` installs every "
                    "part the tests need, so a skip here is a broken install step (tests/conftest.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and under_ci() and not hasattr(rep, "wasxfail"):
        _fail_the_skip(rep, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module-level skip (pytest.importorskip) is a collection report, not a test's."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and under_ci():
        _fail_the_skip(rep, collector.nodeid)
