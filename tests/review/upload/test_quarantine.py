"""A sample whose sidecar cannot be read is quarantined with its reason; the rest of the night is uploaded."""

from __future__ import annotations

import json

import pytest

from inspector.config import InspectorConfig
from inspector.review.spool import iter_samples
from inspector.review.upload import Uploader
from tests.review.upload.spooled import base_images_cache, fill_spool, manifest_ids


def _corrupt(s, how: str) -> None:
    if how == "garbage":
        s.sidecar.write_bytes(b"\x00\xffnot json")
    elif how == "truncated":
        s.sidecar.write_bytes(s.sidecar.read_bytes()[:40])
    elif how == "no_image":
        side = json.loads(s.sidecar.read_text())
        del side["image"]
        s.sidecar.write_text(json.dumps(side))
    elif how == "list":
        s.sidecar.write_text("[1, 2]")
    elif how == "other_id":
        side = json.loads(s.sidecar.read_text())
        s.sidecar.write_text(json.dumps({**side, "id": "someone-else"}))
    elif how == "marked_then_truncated":  # sent by an interrupted run; only its manifest line was left
        s.mark_uploaded()
        s.drop_payload()
        s.sidecar.write_bytes(b"{")


@pytest.mark.parametrize("how, words", [
    ("garbage", "not valid JSON"),
    ("truncated", "not valid JSON"),
    ("no_image", "expected an image record"),
    ("list", "expected a JSON object, got list"),
    ("other_id", "expected id"),
    ("marked_then_truncated", "not valid JSON"),
])
def test_a_corrupt_sidecar_is_quarantined_and_the_rest_uploaded(tmp_path, how, words):
    """Before: one unreadable sidecar ended the night, and every later night at the same sample."""
    spool, dest = tmp_path / "spool", tmp_path / "up"
    expected = fill_spool(spool, 6, base_images_cache())
    bad = sorted(iter_samples(spool), key=lambda s: s.id)[1]
    _corrupt(bad, how)
    bad_files = {p.name for p in bad.root.rglob(f"{bad.id}.*")}
    alarms: list[tuple[str, dict]] = []
    cfg = InspectorConfig(spool={"dir": spool}, upload={"destination": f"file://{dest}", "window": None})
    rep = Uploader(spool, cfg.upload, alarm=lambda k, d: alarms.append((k, d))).run()
    assert rep.ok and rep.quarantined == (bad.id,), rep.summary()
    assert rep.uploaded == 5 and "quarantined 1" in rep.summary()
    assert sorted(manifest_ids(dest)) == sorted(k for k in expected if k != bad.id)
    assert [(k, d["id"]) for k, d in alarms] == [("sample_quarantined", bad.id)]
    assert words in alarms[0][1]["why"]
    q = spool / "quarantine" / bad.date
    assert {p.name for p in q.iterdir()} == bad_files | {f"{bad.id}.reason"}
    assert words in (q / f"{bad.id}.reason").read_text()
    assert list(iter_samples(spool)) == []
    # The next night has nothing left to stumble on.
    again = Uploader(spool, cfg.upload).run()
    assert again.ok and again.uploaded == 0 and again.quarantined == ()
