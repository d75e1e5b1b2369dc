"""Config: strict, bounded, env-overridable, secrets only from the environment."""

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
    for p in sorted((REPO / "configs").glob("*.yaml")):
        load_config(p)


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


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "source: [\n"])
def test_malformed_files(tmp_path, text):
    if text == "":
        load_config(write(tmp_path, text))  # an empty file is all defaults
        return
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


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
