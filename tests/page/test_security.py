"""The page's rules of access: a non-loopback bind needs a token (refused at start without one), every
request then carries it (401 without, 403 wrong), the acknowledge needs the page's header, the token is
environment-only, and at most page.max_clients event streams are served. Real requests on a running service."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest

from inspector.config import PageConfig, load_config
from inspector.errors import ConfigError
from inspector.page import check_bind, is_loopback
from inspector.service.app import Service
from tests.page.conftest import page_config


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.5", False),
    ("fe80::1", False), ("line-pc.plant.local", False),
])
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        check_bind(PageConfig(host=host))
    else:
        with pytest.raises(ConfigError, match="INSPECTOR_PAGE__TOKEN"):
            check_bind(PageConfig(host=host))
        check_bind(PageConfig(host=host, token="s3cret"))


def test_the_service_refuses_a_lan_bind_without_a_token(tmp_path):
    with pytest.raises(ConfigError, match=r"page.host: '0.0.0.0' is not a loopback address"):
        Service(page_config(tmp_path, page={"host": "0.0.0.0"}))


def test_the_token_comes_from_the_environment_only(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("page:\n  enabled: true\n  token: s3cret\n")
    with pytest.raises(ConfigError, match="page.token: secrets are not accepted"):
        load_config(cfg)
    cfg.write_text("page:\n  enabled: true\n  host: 0.0.0.0\n")
    monkeypatch.setenv("INSPECTOR_PAGE__TOKEN", "s3cret")
    loaded = load_config(cfg)
    assert loaded.page.token.get_secret_value() == "s3cret"
    assert "s3cret" not in loaded.model_dump_json()


def _get(port: int, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read(200) if r.getheader("Content-Type", "").startswith("text/event-stream") else r.read()
    c.close()
    return r.status, body


def test_a_lan_bind_serves_only_with_the_token(tmp_path, running):
    # 0.0.0.0 is not loopback: the token is required, also from this machine.
    svc = running(page_config(tmp_path, page={"host": "0.0.0.0", "token": "s3cret", "max_clients": 1}))
    port = svc.page.address[1]
    tok = "?token=" + urllib.parse.quote("s3cret")
    assert _get(port, "/")[0] == 401
    assert _get(port, "/events")[0] == 401
    assert _get(port, "/?token=wrong")[0] == 403
    assert _get(port, "/", headers={"Authorization": "Bearer wrong"})[0] == 403
    status, body = _get(port, "/" + tok)
    assert status == 200 and b"<title>inspector" in body
    assert _get(port, "/", headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert _get(port, "/static/page.js" + tok)[0] == 200
    assert _get(port, "/static/../server.py" + tok)[0] == 404
    # The only write: without the page's header (a cross-site form cannot set it) it is refused.
    assert _get(port, "/alarms/input_drift/ack", "POST")[0] == 401
    assert _get(port, "/alarms/input_drift/ack" + tok, "POST")[0] == 403
    assert _get(port, "/alarms/input_drift/ack" + tok, "POST", {"X-Inspector-Page": "ack"})[0] == 404  # not open
    assert svc.page.state()["unauthorized"] == 5


def test_more_pages_than_max_clients_are_turned_away(tmp_path, running):
    svc = running(page_config(tmp_path, page={"max_clients": 2}))
    port = svc.page.address[1]
    streams = []
    for _ in range(2):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/events")
        r = c.getresponse()
        assert r.status == 200 and r.readline() == b"retry: 2000\n"
        streams.append(c)
    assert _get(port, "/events")[0] == 503
    assert svc.page.hub.state()["refused"] == 1
    for c in streams:
        c.close()
