"""Config: strict, bounded, env-overridable, secrets only from the environment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.config import InspectorConfig, load_config
from inspector.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid():
    cfg = load_config(None)
    assert isinstance(cfg, InspectorConfig)
    assert cfg.decision.on_late == "reject"  # fail safe by default


def test_shipped_configs_are_valid():
    shipped = sorted((REPO / "configs").glob("*.yaml"))
    assert len(shipped) >= 2, shipped  # demo.yaml and the production example at least
    for p in shipped:
        assert isinstance(load_config(p), InspectorConfig), p


@pytest.mark.parametrize(
    "yaml_text, field, words",
    [
        ("source:\n  kind: synthetic\n  bogus: 1\n", "source.bogus", "unknown key"),
        ("nonsense: {}\n", "nonsense", "unknown key"),
        ("model:\n  threads: many\n", "model.threads", "valid integer"),
        ("mqtt:\n  port: 70000\n", "mqtt.port", "less than or equal to 65535"),
        ("decision:\n  budget_ms: -5\n", "decision.budget_ms", "greater than 0"),
        ("decision:\n  on_late: maybe\n", "decision.on_late", "'reject' or 'pass'"),
        ("source:\n  kind: webcam\n", "source", "kind"),
        ("source:\n  kind: opencv\n", "source", "exactly one of url or device"),
        ("upload:\n  destination: ftp://x\n", "upload.destination", "s3://"),
    ],
)
def test_bad_values_name_the_field(tmp_path, yaml_text, field, words):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, yaml_text))
    msg = str(e.value)
    assert f"{field}" in msg and words in msg, msg


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "mqtt:\n  port: 0\n  qos: 7\nmodel:\n  threads: x\n"))
    msg = str(e.value)
    assert "3 problem(s)" in msg and "mqtt.port" in msg and "mqtt.qos" in msg and "model.threads" in msg


def test_environment_overrides_one_field(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_MQTT__PORT", "18830")
    monkeypatch.setenv("INSPECTOR_SOURCE__PARTS_PER_S", "3.5")
    cfg = load_config(write(tmp_path, "source:\n  kind: synthetic\n  parts_per_s: 10\nmqtt:\n  host: broker.local\n"))
    assert cfg.mqtt.port == 18830 and cfg.mqtt.host == "broker.local"
    assert cfg.source.parts_per_s == 3.5


def test_bad_environment_override_names_the_field(monkeypatch):
    monkeypatch.setenv("INSPECTOR_MQTT__PORT", "not-a-port")
    with pytest.raises(ConfigError, match="mqtt.port"):
        load_config(None)


def test_secrets_are_refused_in_yaml_and_taken_from_env(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="INSPECTOR_MQTT__PASSWORD"):
        load_config(write(tmp_path, "mqtt:\n  password: hunter2\n"))
    monkeypatch.setenv("INSPECTOR_MQTT__PASSWORD", "hunter2")
    cfg = load_config(write(tmp_path, "mqtt:\n  username: line\n"))
    assert cfg.mqtt.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg)


CAMERA = "source:\n  kind: opencv\n  url: {url}\n"


# The settings are case-insensitive (`MQTT:` is the `mqtt` section), so the refusal must be too:
# `MQTT: {password: x}` was accepted before.
@pytest.mark.parametrize(
    "yaml_text, field, env",
    [
        ("mqtt:\n  password: hunter2\n", "mqtt.password", "INSPECTOR_MQTT__PASSWORD"),
        ("MQTT:\n  password: hunter2\n", "MQTT.password", "INSPECTOR_MQTT__PASSWORD"),
        ("Mqtt:\n  PassWord: hunter2\n", "Mqtt.PassWord", "INSPECTOR_MQTT__PASSWORD"),
        ("mqtt:\n  PASSWORD: hunter2\n", "mqtt.PASSWORD", "INSPECTOR_MQTT__PASSWORD"),
        ("Upload:\n  Secret_Key: abc\n", "Upload.Secret_Key", "INSPECTOR_UPLOAD__SECRET_KEY"),
        ("UPLOAD:\n  access_key: abc\n", "UPLOAD.access_key", "INSPECTOR_UPLOAD__ACCESS_KEY"),
        ("lifecycle:\n  hmac_key: hunter2\n", "lifecycle.hmac_key", "INSPECTOR_LIFECYCLE__HMAC_KEY"),
        ("Lifecycle:\n  HMAC_Key: hunter2\n", "Lifecycle.HMAC_Key", "INSPECTOR_LIFECYCLE__HMAC_KEY"),
        ("source:\n  kind: opencv\n  url: rtsp://cam/s\n  Password: x\n", "source.Password",
         "INSPECTOR_SOURCE__PASSWORD"),
    ],
)
def test_secrets_are_refused_in_yaml_in_any_case(tmp_path, yaml_text, field, env):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, yaml_text))
    msg = str(e.value)
    assert f"{field}: secrets are not accepted" in msg and env in msg, msg
    assert "hunter2" not in msg


# Credentials inside the camera URL: refused, with the field named, the password never echoed, and
# the way to pass them said. `/`, `@`, `#` or `?` unencoded in a password hide it from urlsplit.
@pytest.mark.parametrize(
    "url, secret",
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/h264", "s3cret"),
        ("RTSP://admin:s3cret@cam/h264", "s3cret"),
        ("http://admin:s3cret@cam/mjpg", "s3cret"),
        ("rtsp://admin:pa/ss@cam:554/h264", "pa/ss"),
        ("rtsp://admin:p@ss@cam/h264", "p@ss"),
        ("rtsp://admin:a%2Fb@cam/h264", "a%2Fb"),
        ("rtsp://admin:x#y@cam/h264", "x#y"),
        ("rtsp://admin:x?y@cam/h264", "x?y"),
        ("rtsp://admin@cam/h264", None),  # a user alone: still goes in source.username
    ],
)
def test_credentials_in_the_camera_url_are_refused(tmp_path, url, secret):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, CAMERA.format(url=f"'{url}'")))
    msg = str(e.value)
    assert "source.url" in msg and "credentials in the URL are refused" in msg, msg
    assert "source.username" in msg and "INSPECTOR_SOURCE__PASSWORD" in msg, msg
    if secret is not None:
        assert secret not in msg, msg


def test_camera_user_and_password_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_SOURCE__USERNAME", "cam-op")
    monkeypatch.setenv("INSPECTOR_SOURCE__PASSWORD", "p/a@s:s%w")
    cfg = load_config(write(tmp_path, CAMERA.format(url="rtsp://cam.plant:554/stream1")))
    assert cfg.source.username == "cam-op" and cfg.source.password.get_secret_value() == "p/a@s:s%w"
    assert "p/a@s" not in repr(cfg) and "p/a@s" not in json.dumps(cfg.model_dump(mode="json"))
    monkeypatch.setenv("INSPECTOR_SOURCE__PASSWORD", "other")
    assert load_config(write(tmp_path, CAMERA.format(url="rtsp://cam.plant:554/stream1"))).config_hash() == \
        cfg.config_hash(), "a password change must not change the published config hash"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/h264", "rtsp://admin:***@10.0.0.5:554/h264"),
        ("rtsp://10.0.0.5/cam", "rtsp://10.0.0.5/cam"),
        ("rtsp://admin:pa/ss@cam:554/h264?x=1", "rtsp://admin:***@cam:554/h264?x=1"),
        ("rtsp://admin:p@ss@cam/h264", "rtsp://admin:***@cam/h264"),
        ("rtsp://admin:a:b:c@cam/h264", "rtsp://admin:***@cam/h264"),
        ("rtsp://admin:100%25@cam/h264", "rtsp://admin:***@cam/h264"),
        ("rtsp://admin:x#frag@cam/h264", "rtsp://admin:***@cam/h264"),
        ("rtsp://cam-op@cam/h264", "rtsp://cam-op@cam/h264"),
        ("rtsp://we/ird:pw@cam/h264", "rtsp://***:***@cam/h264"),  # an odd user is hidden too
        ("camera-1", "camera-1"),
    ],
)
def test_redact_never_shows_a_password(url, expected):
    from inspector.sources.opencv import redact

    assert redact(url) == expected


def test_background_priority_knob(monkeypatch):
    assert load_config(None).background.priority == "nice"
    monkeypatch.setenv("INSPECTOR_BACKGROUND__PRIORITY", "off")
    assert load_config(None).background.priority == "off"
    monkeypatch.setenv("INSPECTOR_BACKGROUND__PRIORITY", "realtime")
    with pytest.raises(ConfigError, match="background.priority"):
        load_config(None)


@pytest.mark.parametrize(
    "yaml_text, field, words",
    [
        ("source:\n  kind: synthetic\n  queue_size: 8\n  max_backlog: 4\n", "source", "max_backlog (4) must be >="),
        ("source:\n  kind: opencv\n  device: 0\n  username: op\n", "source", "username/password go with url"),
        ("source:\n  kind: synthetic\n  max_backlog: 0\n", "source.max_backlog", "greater than or equal to 1"),
    ],
)
def test_source_bounds(tmp_path, yaml_text, field, words):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, yaml_text))
    assert field in str(e.value) and words in str(e.value), str(e.value)


def test_production_config_binds_metrics_to_loopback():
    shipped = sorted((REPO / "configs").glob("*.yaml"))
    assert shipped
    for p in shipped:
        assert load_config(p).metrics.host == "127.0.0.1", f"{p.name}: metrics must not listen on all interfaces"
    assert load_config(None).metrics.host == "127.0.0.1"


def test_an_empty_file_is_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "")).model_dump() == InspectorConfig().model_dump()
    assert load_config(write(tmp_path, "# nothing but a comment\n")).model_dump() == InspectorConfig().model_dump()


@pytest.mark.parametrize("text, why", [("- a\n- b\n", "expected a mapping of sections at the top, got list"),
                                       ("source: [\n", "not valid YAML"),
                                       ("42\n", "expected a mapping of sections at the top, got int")])
def test_malformed_files(tmp_path, text, why):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and why in str(e.value), str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_check_config_cli_exit_codes(tmp_path):
    bad = write(tmp_path, "source:\n  kind: synthetic\n  bogus: 1\nmodel:\n  threads: abc\nmqtt:\n  port: 99999\n")
    r = subprocess.run([sys.executable, "-m", "inspector", "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    for field in ("source.bogus", "model.threads", "mqtt.port"):
        assert field in r.stderr
    ok = subprocess.run([sys.executable, "-m", "inspector", "check-config", str(REPO / "configs/demo.yaml")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and ok.stdout.strip() == "OK"


def test_committed_config_schema_is_current():
    import json

    from inspector.config import json_schema

    committed = REPO / "schemas" / "config.schema.json"
    assert committed.exists(), "run `inspector schema --out schemas`"
    assert json.loads(committed.read_text()) == json_schema(), "schemas/ is stale: run `make schemas`"


def test_package_data_named_in_pyproject_exists():
    """pyproject.toml ships `inspector/py.typed` (PEP 561: the package's annotations are for type
    checkers); the file was named there but missing, so the wheel silently went without it."""
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    for package, files in meta["tool"]["setuptools"]["package-data"].items():
        for name in files:
            assert (REPO / package.replace(".", "/") / name).is_file(), f"{package}/{name} is named but missing"
