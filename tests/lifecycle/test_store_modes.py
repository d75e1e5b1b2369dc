"""Store permissions: the documented modes whatever the umask (mkdtemp/mkstemp make 0700/0600, copy2
copies the source's mode). With `lifecycle.socket_group`, its members `model list` and stage, and the
service reads what they staged; anyone else gets a clear error (exit 2), not a traceback. As real other
users where the test runs as root (setuid children), on disk otherwise."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import inspector.cli
import inspector.cli.model
import inspector.lifecycle.control  # noqa: F401 - imported before a child turns into a user who may not read them
from inspector.bundle.signing import Trust
from inspector.cli.common import load_config_arg
from inspector.lifecycle.manager import open_store
from inspector.lifecycle.store import ModelRef, ModelStore
from tests.lifecycle.bundles import make_bundle

SERVICE, MEMBER, OUTSIDER = 40001, 40002, 65534


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_the_documented_modes_whatever_the_umask(tmp_path):
    group = grp.getgrgid(os.getgid()).gr_name
    src = make_bundle(tmp_path / "b", "2.0.0")
    for f in src.iterdir():
        f.chmod(0o600)  # a private copy: copy2 would carry 0600 into the store
    store = ModelStore(tmp_path / "store", "st1", group=group)
    old = os.umask(0o077)
    try:
        ref = store.stage(src, Trust())
        store.set_active(ref, why="test")
    finally:
        os.umask(old)
    root = tmp_path / "store"
    assert _mode(root) == _mode(root / "demo") == 0o2770
    assert _mode(root / "demo" / "2.0.0") == 0o750 and _mode(root / "active") == 0o750
    assert {_mode(f) for f in (root / "demo" / "2.0.0").iterdir()} == {0o640}
    assert _mode(store.pointer_path) == 0o640
    assert {os.stat(p).st_gid for p in root.rglob("*")} == {os.getgid()}
    plain = ModelStore(tmp_path / "plain", "st1")  # no group: the service's user and its own group
    os.umask(0o077)
    try:
        plain.set_active(plain.stage(src, Trust()), why="test")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "plain") == _mode(tmp_path / "plain" / "demo") == 0o750
    assert _mode(plain.pointer_path) == 0o640 and _mode(tmp_path / "plain" / "demo" / "2.0.0") == 0o750


def _group() -> grp.struct_group:
    for name in ("users", "nogroup"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.fail("neither group 'users' nor 'nogroup' exists: the test needs one group to share the store")


@pytest.fixture
def base():
    if os.geteuid() != 0:  # test_the_documented_modes_whatever_the_umask covers the modes on disk
        pytest.skip("needs root to act as another user (service, group member, outsider)")
    d = Path(tempfile.mkdtemp(prefix="inspector-store-", dir="/tmp"))  # pytest's tmp is 0700: no other user gets in
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _as(uid: int, groups: list[int], fn: Callable[[], int], base: Path) -> Ran:
    """Runs `fn` as user `uid` (gid `uid`, `groups` besides) under UMask 077 in a forked child: this
    interpreter may live where other users cannot execute it (a pyenv under /root), so no exec."""
    out, err = tempfile.TemporaryFile(dir=base), tempfile.TemporaryFile(dir=base)
    pid = os.fork()
    if pid == 0:  # child
        rc = 70
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - pytest's capture is not fd 1
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.setgroups(groups)
            os.setgid(uid)
            os.setuid(uid)
            os.umask(0o077)
            os.chdir(base)
            rc = fn()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return Ran(os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode())


def _cli(*argv: str) -> Callable[[], int]:
    return lambda: inspector.cli.main(list(argv))


def _service(conf: Path, ref: str, src: Path | None = None) -> Callable[[], int]:
    """What the service does with the store: the first start stages `src` and points at it; a promote
    verifies `ref` (every byte of every file read) and moves the pointer."""
    def run() -> int:
        store, trust = open_store(load_config_arg(str(conf)))
        if src is not None:
            store.set_active(store.stage(src, trust), why="first start")
        else:
            r = ModelRef.parse(ref)
            store.verify(r, trust)
            for f in store.path(r).iterdir():
                f.read_bytes()
            store.set_active(r, why="promote", previous=store.active_ref())
        print("ok", store.active_ref())
        return 0
    return run


def test_group_members_list_and_stage_and_the_service_reads_it(base):
    g = _group()
    var = base / "var"
    var.mkdir()
    os.chown(var, SERVICE, SERVICE)
    conf = base / "line.yaml"
    conf.write_text(json.dumps({"lifecycle": {"store": str(var / "models"), "station": "st1",
                                              "socket": str(base / "run" / "ctl.sock"), "socket_mode": "0660",
                                              "socket_group": g.gr_name}}))
    first = make_bundle(base / "first", "1.0.0")
    mine = make_bundle(base / "mine", "2.0.0")
    for p in [mine, *mine.iterdir()]:  # the member's own private copy
        os.chown(p, MEMBER, MEMBER)
        p.chmod(0o700 if p.is_dir() else 0o600)

    # the service's first start: the store and the pointer, as the service's user under UMask 077
    r = _as(SERVICE, [g.gr_gid], _service(conf, "demo@1.0.0", src=first), base)
    assert r.returncode == 0, r.stderr[-3000:]

    # a member of the group: lists, stages its own (0600) copy
    r = _as(MEMBER, [g.gr_gid], _cli("model", "list", "--json", "--config", str(conf)), base)
    assert r.returncode == 0, r.stderr[-3000:]
    listed = json.loads(r.stdout)
    assert listed["active"] == "demo@1.0.0" and [v["ref"] for v in listed["versions"]] == ["demo@1.0.0"]
    r = _as(MEMBER, [g.gr_gid], _cli("model", "stage", str(mine), "--config", str(conf)), base)
    assert r.returncode == 0, r.stderr[-3000:]

    # the service reads (every byte of) what the member staged and points at it
    r = _as(SERVICE, [g.gr_gid], _service(conf, "demo@2.0.0"), base)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ok demo@2.0.0" in r.stdout

    # anyone else: a clear refusal naming the store and the group, exit 2, no traceback
    r = _as(OUTSIDER, [], _cli("model", "list", "--config", str(conf)), base)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "permission denied" in r.stderr and g.gr_name in r.stderr
    assert ModelStore(var / "models", "st1").active_ref() == ModelRef("demo", "2.0.0")
