"""A real Label Studio (pip `label-studio`, Django on SQLite in a temporary data dir) on a free port: a project with
the inspector's labelling config, the exported tasks imported with their pre-annotations, a reviewer's work written
through the HTTP API (confirm, delete a box, add a box, skip), the project exported, and the export imported back
with `inspector dataset import`; the same for a classifier's night (a Choices config: confirm, change the class,
skip). One server for the module (its start is the expensive part); each test has its own project and uploads
folder.

Label Studio lives in its own virtual environment (`make labelstudio`: build/labelstudio-venv; it pins its own
Django stack and is never part of the runtime). Its API refuses legacy tokens by default; the test starts it with
`--user-token` and its documented `--enable-legacy-api-token` switch and sends `Authorization: Token ...`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inspector.cli import main
from tests.fixtures.s3_server import free_port
from tests.review.test_export import NIGHT, spool_and_upload

REPO = Path(__file__).resolve().parents[2]
LABEL_STUDIO = Path(os.environ.get("INSPECTOR_LABEL_STUDIO",
                                   REPO / "build" / "labelstudio-venv" / "bin" / "label-studio"))
# A data dir whose database `make labelstudio` migrated once: copied per test (a fresh one migrates at start).
MIGRATED = REPO / "build" / "labelstudio-data"
TOKEN = "inspector-test-token-0123456789"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not LABEL_STUDIO.exists(), reason=f"{LABEL_STUDIO} is not "
                                                   "installed (`make labelstudio`; `make test` installs it)")]


class LabelStudio:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body=None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            payload = r.read()
        return payload if raw else json.loads(payload or b"null")


@pytest.fixture(scope="module")
def label_studio_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    served = tmp_path / "served"  # Label Studio's document root; a storage must be a folder below it
    served.mkdir()
    if (MIGRATED / ".stamp").exists():
        shutil.copytree(MIGRATED, tmp_path / "ls-data", ignore=shutil.ignore_patterns(".stamp"))
    env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(tmp_path / "ls-data"),
               LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true", LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(served),
               LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true", SENTRY_DSN="", FRONTEND_SENTRY_DSN="",
               COLLECT_ANALYTICS="false", LATEST_VERSION_CHECK="false",
               PYTHONUNBUFFERED="1")
    log = open(tmp_path / "label-studio.log", "w")
    proc = subprocess.Popen([str(LABEL_STUDIO), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
                             "--internal-host", "127.0.0.1", "--username", "reviewer@example.com", "--password",
                             "reviewer-pass-1", "--user-token", TOKEN, "--enable-legacy-api-token"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ls = LabelStudio(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 240  # a fresh data dir migrates its database first (see MIGRATED)
        while True:
            assert proc.poll() is None, (tmp_path / "label-studio.log").read_text()[-3000:]
            try:
                ls.call("GET", "/api/projects")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, (tmp_path / "label-studio.log").read_text()[-3000:]
                time.sleep(0.5)
        yield ls, served
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def label_studio(label_studio_server, request):
    """The module's server and this test's uploads folder below its document root."""
    ls, served = label_studio_server
    uploads = served / request.node.name
    uploads.mkdir()
    return ls, uploads


def test_a_review_round_trip_through_a_real_label_studio(tmp_path, label_studio):
    ls, uploads = label_studio
    cfg = spool_and_upload(tmp_path, f"file://{uploads}")
    out = tmp_path / "review"
    assert main(["review", "export", str(out), "--config", str(cfg), "--since", NIGHT, "--until", NIGHT,
                 "--to", "labelstudio", "--document-root", str(uploads.parent)]) == 0

    project = ls.call("POST", "/api/projects", {"title": "inspector review",
                                                "label_config": (out / "labeling_config.xml").read_text()})
    pid = project["id"]
    # the uploads folder as the project's local-files storage (no sync: the tasks are imported with their URLs)
    ls.call("POST", "/api/storages/localfiles", {"project": pid, "path": str(uploads), "use_blob_urls": False,
                                                 "title": "inspector uploads"})
    imported = ls.call("POST", f"/api/projects/{pid}/import", json.loads((out / "tasks.json").read_text()))
    assert imported["task_count"] == 6 and imported["prediction_count"] == 6
    tasks = ls.call("GET", f"/api/tasks?project={pid}&page_size=100&fields=all")
    tasks = sorted(tasks["tasks"] if isinstance(tasks, dict) else tasks, key=lambda t: t["id"])
    assert len(tasks) == 6
    # Label Studio serves the uploaded frame from its local-files storage at the task's URL
    frame = ls.call("GET", tasks[0]["data"]["image"], raw=True)
    assert frame == (out / "images" / f"{tasks[0]['data']['image_sha256']}.jpg").read_bytes()

    # The reviewer: starts from the model's boxes (the prediction), then confirms, deletes, adds, skips.
    def prediction(t):
        return [{k: v for k, v in r.items() if k != "score"} for r in t["predictions"][0]["result"]]

    edits = {}
    edits[0] = ("confirm", prediction(tasks[0]), False)
    edits[1] = ("delete", prediction(tasks[1])[:-1], False)  # the uncertain pit was not a pit
    added = {**prediction(tasks[2])[-1], "id": "reviewer1"}
    added["value"] = {**added["value"], "x": 60.0, "y": 60.0, "width": 6.0, "height": 5.0,
                      "rectanglelabels": ["crack"]}
    edits[2] = ("add", prediction(tasks[2]) + [added], False)
    edits[3] = ("skip", [], True)
    for k, (_, result, cancelled) in edits.items():
        ls.call("POST", f"/api/tasks/{tasks[k]['id']}/annotations/", {"result": result, "was_cancelled": cancelled,
                                                                      "lead_time": 3.0})
    export = ls.call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
    assert len(export) == 6
    (out / "reviewed.json").write_text(json.dumps(export))

    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "labelstudio", str(out / "reviewed.json"), "--out", str(ds)]) == 0
    review = json.loads((ds / "dataset.json").read_text())["source"]["review"]
    assert review["outcomes"] == {"confirmed": 1, "corrected": 2, "skipped": 1, "unreviewed": 2}
    assert review["boxes"]["deleted"] == 1 and review["per_class"]["pit"]["deleted"] == 1
    assert review["boxes"]["added"] == 1 and review["per_class"]["crack"]["added"] == 1
    assert review["imported"] == 3
    by_id = {i["id"]: i for i in review["items"]}
    skipped = next(i for i in by_id.values() if i["outcome"] == "skipped")
    assert skipped["id"] == tasks[3]["data"]["inspector_id"]


def test_a_classifier_review_round_trip_through_a_real_label_studio(tmp_path, label_studio):
    """A classifier's night: the Choices config, the model's class pre-selected; the reviewer confirms, changes the
    class of a passed NG part (a miss) and of a rejected good part (a false reject), skips one and leaves one; the
    export comes back through `dataset import` (review.json says classify: no --task needed)."""
    from tests.review.cls_night import PREDICTED, cls_spool_and_upload

    ls, uploads = label_studio
    cfg = cls_spool_and_upload(tmp_path, f"file://{uploads}")
    out = tmp_path / "review"
    assert main(["review", "export", str(out), "--config", str(cfg), "--since", NIGHT, "--until", NIGHT,
                 "--to", "labelstudio", "--document-root", str(uploads.parent)]) == 0
    project = ls.call("POST", "/api/projects", {"title": "inspector classify review",
                                                "label_config": (out / "labeling_config.xml").read_text()})
    pid = project["id"]
    ls.call("POST", "/api/storages/localfiles", {"project": pid, "path": str(uploads), "use_blob_urls": False,
                                                 "title": "inspector uploads"})
    imported = ls.call("POST", f"/api/projects/{pid}/import", json.loads((out / "tasks.json").read_text()))
    n = len(PREDICTED)
    assert imported["task_count"] == n and imported["prediction_count"] == n
    tasks = ls.call("GET", f"/api/tasks?project={pid}&page_size=100&fields=all")
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    by_part = {int(t["data"]["part_id"][-7:]): t for t in tasks}
    # Label Studio holds the model's choice as the task's prediction, with its score
    pred = by_part[0]["predictions"][0]["result"][0]
    assert pred["type"] == "choices" and pred["value"]["choices"] == [PREDICTED[0]] == ["ng"]

    def choose(t, label=None):
        r = {k: v for k, v in t["predictions"][0]["result"][0].items() if k != "score"}
        return [{**r, "value": {"choices": [label]}}] if label else [r]

    edits = {0: (choose(by_part[0], "ok"), False),  # rejected (p(ng) 0.95), good for the reviewer: a false reject
             1: (choose(by_part[1]), False), 2: (choose(by_part[2]), False),
             3: (choose(by_part[3], "ng"), False),  # passed (p(ng) 0.70), NG for the reviewer: a miss
             4: ([], True)}  # skipped; part 5 is left unreviewed
    for k, (result, cancelled) in edits.items():
        ls.call("POST", f"/api/tasks/{by_part[k]['id']}/annotations/", {"result": result, "was_cancelled": cancelled,
                                                                        "lead_time": 2.0})
    export = ls.call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
    assert len(export) == n
    (out / "reviewed.json").write_text(json.dumps(export))

    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "labelstudio", str(out / "reviewed.json"), "--out", str(ds)]) == 0
    meta = json.loads((ds / "dataset.json").read_text())
    review = meta["source"]["review"]
    assert meta["task"] == "classify" and meta["classes"] == ["ng", "ok"] and meta["pass_class"] == "ok"
    assert review["outcomes"] == {"confirmed": 2, "corrected": 2, "skipped": 1, "unreviewed": 1}
    assert review["labels"] == {"confirmed": 2, "relabelled": 2, "misses": 1, "false_rejects": 1}
    assert review["imported"] == 4
    file_of = {int(i["part_id"][-7:]): i["file"] for i in review["items"]}
    on_disk = {f.name: f.parent.name for f in ds.glob("*/*/*.jpg")}
    assert on_disk == {file_of[0]: "ok", file_of[1]: "ok", file_of[2]: "ng", file_of[3]: "ng"}
