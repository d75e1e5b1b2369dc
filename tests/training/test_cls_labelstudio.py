"""Image-level labels through a real Label Studio: a `Choices` project over generated tiles (local-files storage),
a reviewer's choice per task written through the HTTP API (one task skipped), the project exported as JSON and
imported with `inspector dataset import --from labelstudio --task classify`. The server is the review tests'
fixture (tests/review/test_labelstudio.py: its own virtual environment, a migrated data dir copied per test)."""

from __future__ import annotations

import json

import pytest

from inspector.cli import main
from tests.review import test_labelstudio as review_ls
from tests.training.cls_folders import make_folders

LABEL_STUDIO = review_ls.LABEL_STUDIO
# the review tests' server fixtures, used here by name (a per-test `label_studio`, on a module-wide server where
# that module has one)
label_studio = review_ls.label_studio
label_studio_server = getattr(review_ls, "label_studio_server", None)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not LABEL_STUDIO.exists(), reason=f"{LABEL_STUDIO} is not "
                                                   "installed (`make labelstudio`; `make test` installs it)")]

CHOICES = """<View>
  <Image name="image" value="$image"/>
  <Choices name="verdict" toName="image" choice="single" showInLine="true">
    <Choice value="ok"/><Choice value="ng"/>
  </Choices>
</View>"""


def test_choices_round_trip_through_a_real_label_studio(tmp_path, label_studio):
    ls, uploads = label_studio
    files = make_folders(tmp_path / "tiles", {"ok": 4, "ng": 4})
    truth = {}
    for label, fs in files.items():
        for f in fs:
            (uploads / f.name).write_bytes(f.read_bytes())
            truth[f.name] = label
    pid = ls.call("POST", "/api/projects", {"title": "ok/ng", "label_config": CHOICES})["id"]
    ls.call("POST", "/api/storages/localfiles", {"project": pid, "path": str(uploads), "use_blob_urls": False,
                                                 "title": "tiles"})
    tasks = [{"data": {"image": f"/data/local-files/?d={uploads.name}/{name}"}} for name in sorted(truth)]
    assert ls.call("POST", f"/api/projects/{pid}/import", tasks)["task_count"] == 8
    got = ls.call("GET", f"/api/tasks?project={pid}&page_size=100&fields=all")
    got = sorted(got["tasks"] if isinstance(got, dict) else got, key=lambda t: t["id"])
    skipped = got[0]["data"]["image"].rsplit("/", 1)[-1]
    for t in got:
        name = t["data"]["image"].rsplit("/", 1)[-1]
        cancelled = name == skipped
        result = [] if cancelled else [{"from_name": "verdict", "to_name": "image", "type": "choices",
                                        "value": {"choices": [truth[name]]}}]
        ls.call("POST", f"/api/tasks/{t['id']}/annotations/", {"result": result, "was_cancelled": cancelled})
    export = ls.call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
    (uploads / "export.json").write_text(json.dumps(export))  # beside the images: they lie inside the export

    ds = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", "labelstudio", "--task", "classify", str(uploads / "export.json"),
               "--out", str(ds), "--val-fraction", "0.25"])
    assert rc == 2  # the skipped task is named and skipped: exit 2 until --skip-bad
    assert main(["dataset", "import", "--from", "labelstudio", "--task", "classify",
                 str(uploads / "export.json"), "--out", str(ds), "--val-fraction", "0.25", "--skip-bad"]) == 0
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["classes"] == ["ng", "ok"] and meta["pass_class"] == "ok"
    imported = {f.name: f.parent.name for f in ds.glob("*/*/*.png")}
    assert imported == {n: c for n, c in truth.items() if n != skipped}
    assert len(meta["skipped"]) == 1 and "not labelled yet" in meta["skipped"][0]["reason"]
