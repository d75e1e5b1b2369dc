"""Atomic, durable files: a write replaces the whole file or nothing, leaves no temp file, sets the mode
before the rename; and the package fsyncs in one module only."""

import ast
import json
import os
import stat
from pathlib import Path

import pytest

from inspector.kernel.durable import TMP_SUFFIX, create_synced, write_atomic, write_atomic_json

PACKAGE = Path(__file__).resolve().parents[2] / "inspector"


@pytest.mark.parametrize("tmp_name", [None, ".frame.jpg.1234.tmp"])
def test_write_atomic_replaces_the_whole_file_and_leaves_no_temp(tmp_path, tmp_name):
    path = tmp_path / "frame.jpg"
    path.write_bytes(b"old")
    write_atomic(path, b"new bytes", tmp=tmp_path / tmp_name if tmp_name else None, sync_dir=True)
    assert path.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.jpg"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "text, not bytes")  # type: ignore[arg-type]  # fails after the temp file exists
    assert path.read_bytes() == b"old"
    assert not (tmp_path / f"manifest.jsonl{TMP_SUFFIX}").exists()


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o644])
def test_write_atomic_json_sets_the_mode_and_writes_indented_json(tmp_path, mode):
    path = tmp_path / "active" / "station.json"  # the folder is made
    doc = {"name": "demo", "version": "1.3.0", "history": [1, 2]}
    write_atomic_json(path, doc, mode=mode)
    assert json.loads(path.read_text()) == doc
    assert path.read_text() == json.dumps(doc, indent=1)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in path.parent.iterdir()] == ["station.json"]


def test_create_synced_makes_an_empty_marker_and_keeps_an_existing_one(tmp_path):
    marker = tmp_path / "x.uploaded"
    create_synced(marker)
    assert marker.read_bytes() == b""
    marker.write_bytes(b"kept")
    create_synced(marker)
    assert marker.read_bytes() == b"kept"


def test_only_the_kernel_durable_module_calls_fsync():
    """One module says how a file is made durable; the spool, the uploader and the store call it."""
    callers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fsync"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"):
                callers.append(str(path.relative_to(PACKAGE)))
    assert set(callers) == {os.path.join("kernel", "durable.py")}, callers
