"""Shared fixtures. Real parts live in tests/fixtures/: a private Mosquitto, an S3-compatible
server and an RTSP server, each on a free loopback port, started per test session."""

import os

# Nothing in the test suite may reach the network or phone home.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("OPENVINO_TELEMETRY_ENABLE", "0")

pytest_plugins = [
    "tests.fixtures.mqtt_broker",
    "tests.fixtures.s3_server",
    "tests.fixtures.rtsp_server",
    "tests.fixtures.genicam_camera",
]
