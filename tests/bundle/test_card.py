"""The model card's one schema (inspector.bundle.card): what every reader refuses, naming the field and
value, and what it keeps accepting (models/demo's card, the free-form records, cards without
input_channels or an envelope)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from inspector.bundle.card import CardRefused, ModelCard, parse_card, read_card, write_card
from inspector.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"


def demo_card() -> dict:
    return json.loads((DEMO / "model_card.json").read_text())


# (what is done to the thresholds, the message that must name the class and the value)
BAD_THRESHOLDS = [
    ({"crack": 1.5}, r"thresholds\.crack: expected a number in \(0, 1\], got 1\.5 \(it would never reject"),
    ({"pit": math.nan}, r"thresholds\.pit: expected a finite number in \(0, 1\], got nan"),
    ({"pit": math.inf}, r"thresholds\.pit: expected a finite number in \(0, 1\], got inf"),
    ({"scratch": 0}, r"thresholds\.scratch: expected a number in \(0, 1\], got 0 \(it would reject every part"),
    ({"scratch": -0.2}, r"thresholds\.scratch: expected a number in \(0, 1\], got -0\.2"),
    ({"contamination": "0.5"}, r"thresholds\.contamination: expected a number in \(0, 1\], got '0\.5'"),
    ({"contamination": True}, r"thresholds\.contamination: expected a number in \(0, 1\], got True"),
    ({"crack": None}, r"thresholds\.crack: expected a number in \(0, 1\], got None"),
    ("missing:crack", r"no threshold for class 'crack'"),
    ({"rust": 0.3}, r"thresholds\.rust: 'rust' is not a class of this model"),
]


def with_thresholds(card: dict, change) -> dict:
    if isinstance(change, str):
        del card["thresholds"][change.split(":")[1]]
    else:
        card["thresholds"].update(change)
    return card


@pytest.mark.parametrize("change, message", BAD_THRESHOLDS)
def test_bad_thresholds_are_refused_naming_the_class_and_value(change, message):
    card = with_thresholds(demo_card(), change)
    with pytest.raises(CardRefused, match=message) as e:
        parse_card(card, "c.json")
    assert isinstance(e.value, ModelError) and e.value.exit_code == 2


def test_nan_written_by_json_is_read_back_and_refused(tmp_path):
    """Python's JSON writes and reads NaN: a card with `pit: NaN` on disk must not load."""
    card = demo_card()
    card["thresholds"]["pit"] = float("nan")
    text = json.dumps(card)  # allow_nan: what any Python writer of the card puts on disk
    assert '"pit": NaN' in text
    (tmp_path / "model_card.json").write_text(text)
    with pytest.raises(CardRefused, match=r"model_card\.json: model card refused: thresholds\.pit: .*got nan"):
        read_card(tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("classes", [], "classes: List should have at least 1 item"),
    ("classes", ["pit", "pit"], r"classes: .*expected unique class names, got \['pit'\]"),
    ("input_size", [320], "input_size"),
    ("input_size", [0, 320], r"input_size: .*expected \[height, width\] > 0, got \[0, 320\]"),
    ("input_channels", 2, "input_channels: Input should be 1 or 3"),
    ("version", "1.0/../x", "version: String should match pattern"),
    ("files", {}, "files: Dictionary should have at least 1 item"),
    ("files", {"int8": {"xml": "a.xml", "bin": "a.bin", "xml_sha256": "0" * 64}},
     "files.int8: has no bin or bin_sha256"),
    ("files", {"int8": {"xml": "../a.xml", "bin": "a.bin", "xml_sha256": "0" * 64, "bin_sha256": "0" * 64}},
     r"files\.int8\.xml: expected a plain file name beside the card, got '\.\./a\.xml'"),
    ("files", {"int8": {"xml": "a.xml", "bin": "a.bin", "xml_sha256": "0" * 63, "bin_sha256": "0" * 64}},
     "files.int8.xml_sha256: String should match pattern"),
    ("input_envelope", {"stats": {"luma": [0, 255], "glare": [0, 1]}},
     r"input_envelope\.stats: expected names among .*got \['glare'\]"),
    ("input_envelope", {"stats": {"luma": [0, math.nan]}}, r"input_envelope\.stats: expected low <= high"),
    ("float_weights", {"file": "model.pt", "sha256": "abc"}, "float_weights.sha256: String should match pattern"),
    ("parent", {"version": "1.0.0"}, "parent.name: Field required"),
    ("training", "fast", "training: Input should be a valid dictionary"),
])
def test_other_fields_are_refused_naming_the_field(field, value, message):
    card = demo_card()
    card[field] = value
    with pytest.raises(CardRefused, match=message):
        parse_card(card, "c.json")


def test_missing_required_fields_are_named():
    card = demo_card()
    del card["thresholds"], card["name"]
    with pytest.raises(CardRefused, match=r"name: Field required; thresholds: Field required"):
        parse_card(card, "c.json")


def test_the_demo_card_and_older_cards_load_as_they_are():
    card, raw = parse_card((DEMO / "model_card.json").read_bytes(), "demo")
    assert card.thresholds == raw["thresholds"] and list(card.thresholds) == card.classes
    assert card.envelope is not None and "luma" in card.envelope.bounds
    assert raw["evaluation"]["int8"]["mAP50"] == card.evaluation["int8"]["mAP50"]
    assert card.float_weights.sha256 == raw["float_weights"]["sha256"] and card.parent is None
    assert card.model_extra["versions"] == raw["versions"]  # a record the schema does not name: kept
    older = demo_card()
    for k in ("input_channels", "input_envelope", "float_weights", "created"):
        del older[k]
    older["something_a_later_build_writes"] = {"x": 1}  # a free-form record: kept, not refused
    older["thresholds"]["crack"] = 1  # a JSON integer threshold of 1 is 1.0
    c, _ = parse_card(older, "older")
    assert c.input_channels == 3 and c.envelope is None and c.thresholds["crack"] == 1.0


def test_write_card_refuses_before_writing(tmp_path):
    card = with_thresholds(demo_card(), {"crack": 1.5})
    with pytest.raises(CardRefused, match=r"thresholds\.crack: .*got 1\.5"):
        write_card(tmp_path, card)
    assert list(tmp_path.iterdir()) == []
    good = demo_card()
    assert isinstance(write_card(tmp_path, good), ModelCard)
    assert json.loads((tmp_path / "model_card.json").read_text()) == good


@pytest.mark.parametrize("change, message", [
    ({"task": "segment"}, r"task: Input should be 'detect' or 'classify', got 'segment'"),
    ({"task": "classify"}, r"pass_class: expected one of the classes .* for a classify model .*got None"),
    ({"task": "classify", "pass_class": "ok"}, r"pass_class: expected one of the classes .*got 'ok'"),
    ({"pass_class": "crack"}, r"pass_class: a detect model has none .*got 'crack'"),
    ({"task": "detect", "pass_class": "crack"}, r"pass_class: a detect model has none"),
])
def test_task_and_pass_class_are_checked(change, message):
    card = demo_card()
    card.update(change)
    with pytest.raises(CardRefused, match=message):
        parse_card(card, "c.json")


def test_task_defaults_to_detect_and_classify_names_its_pass_class():
    card = demo_card()
    assert parse_card(card, "c.json")[0].task == "detect"  # models/demo says so
    del card["task"]  # cards written before the second model kind have none: all detectors
    c, _ = parse_card(card, "c.json")
    assert c.task == "detect" and c.pass_class is None
    cls = demo_card()
    cls.update(task="classify", classes=["ok", "ng"], thresholds={"ok": 0.5, "ng": 0.5}, pass_class="ok")
    del cls["input_envelope"]
    c, raw = parse_card(cls, "c.json")
    assert (c.task, c.pass_class, c.classes) == ("classify", "ok", ["ok", "ng"])
