"""The model card (`model_card.json`): one typed schema that every reader and the writer use.

What the runtime acts on is typed and checked here, once, for every reader (the detector's
`load_bundle`, the model store, the drift guard's envelope, `model build`, `retrain`, `model envelope`):

- `name`, `version`: usable as store folder names (letters, digits, _ . + -);
- `task`: `detect` (boxes per class; a card without `task` is one) or `classify` (a score per class for
  the whole image); `pass_class`: for `classify`, the class that passes a part (one of `classes`); a
  `detect` card has none;
- `classes` (unique, non-empty), `input_size` [height, width] > 0, `input_channels` 1 or 3;
- `thresholds`: exactly one per class, each a finite number in (0, 1]. A threshold above 1 (or NaN,
  which Python's JSON reader accepts) never rejects its class; 0 or below rejects every part;
- `files`: per precision, the IR's xml and bin with their sha256 (64 hex digits);
- `input_envelope` (optional): the drift guard's envelope, parsed by `Envelope.from_card` (an unknown
  statistic, low > high or a wrong number of confidence bins is refused).

- `float_weights` (optional, null for bundles built before there was a .pt): file and sha256;
- `parent` (optional: a retrained candidate's lineage): name, version, card_sha256, ...

The provenance records (`training`, `evaluation`, `quantization`, `threshold_calibration`) are objects,
free-form inside; other top-level records are kept as they are (`extra="allow"` at the top level): a
card written by an older or newer `inspector model build` with another record in it still loads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from inspector.bundle import CARD_NAME
from inspector.bundle.envelope import Envelope
from inspector.bundle.signing import BundleRefused

_PATH_PART = r"^[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]*$"
_SHA256 = r"^[0-9a-f]{64}$"


class CardRefused(BundleRefused):
    """The card does not follow the schema (a ModelError: exit 2); the message names the field, what was
    expected and what the card holds."""


class ModelFiles(BaseModel):
    """One precision's IR: the two files and their sha256s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    xml: str = Field(min_length=1)
    bin: str = Field(min_length=1)
    xml_sha256: str = Field(pattern=_SHA256)
    bin_sha256: str = Field(pattern=_SHA256)
    bytes: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _every_file_has_its_sha256(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for kind in ("xml", "bin"):
                if not data.get(kind) or not data.get(f"{kind}_sha256"):
                    raise ValueError(f"has no {kind} or {kind}_sha256: every model file needs its sha256 in the card")
        return data

    @field_validator("xml", "bin")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if Path(v).name != v or v in (".", ".."):
            raise ValueError(f"expected a plain file name beside the card, got {v!r}")
        return v


class FloatWeights(BaseModel):
    """The float weights the tool chain ended with (`model.pt`), where `inspector retrain` starts."""

    model_config = ConfigDict(extra="allow", frozen=True)

    file: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA256)
    bytes: int | None = Field(default=None, ge=0)
    format: str | None = None


class Lineage(BaseModel):
    """`parent`: the bundle a candidate was retrained from (written by `inspector retrain`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    version: str
    path: str | None = None
    card_sha256: str | None = Field(default=None, pattern=_SHA256)
    int8_bin_sha256: str | None = Field(default=None, pattern=_SHA256)
    thresholds: dict[str, float] | None = None


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=_PATH_PART)
    version: str = Field(pattern=_PATH_PART)
    created: str | None = None
    # What the model's output means: `detect` (boxes per class) or `classify` (one score per class for the
    # whole image). Cards written before there was a second kind have none: they are all detectors.
    task: Literal["detect", "classify"] = "detect"
    classes: list[str] = Field(min_length=1)
    # classify only: the class that means the part is good (every other class rejects it); detect: none
    pass_class: str | None = None
    input_size: tuple[int, int]
    input_channels: Literal[1, 3] = 3  # cards from before grayscale models have none: those take 3
    thresholds: dict[str, Any]
    files: dict[str, ModelFiles] = Field(min_length=1)
    float_weights: FloatWeights | None = None  # null: a bundle built before there was a .pt
    input_envelope: dict[str, Any] | None = None
    # Provenance records: read by the tool chain (retrain takes the training and quantization settings of its
    # parent), free-form inside (each tool version writes what it measured)
    training: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    threshold_calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    parent: Lineage | None = None
    _envelope: Envelope | None = PrivateAttr(default=None)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if any(not c.strip() for c in v):
            raise ValueError(f"expected non-empty class names, got {v}")
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"expected unique class names, got {dup} more than once")
        return v

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) <= 0:
            raise ValueError(f"expected [height, width] > 0, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _thresholds_and_envelope(self) -> ModelCard:
        if self.task == "classify" and self.pass_class not in self.classes:
            raise ValueError(f"pass_class: expected one of the classes {self.classes} for a classify model "
                             f"(the class that passes a part), got {self.pass_class!r}")
        if self.task == "detect" and self.pass_class is not None:
            raise ValueError(f"pass_class: a detect model has none (every class it finds is a defect), "
                             f"got {self.pass_class!r}")
        problems = threshold_problems(self.classes, self.thresholds)
        if problems:
            raise ValueError("; ".join(problems))
        # floats in class order (a JSON int 1 is the threshold 1.0)
        object.__setattr__(self, "thresholds", {c: float(self.thresholds[c]) for c in self.classes})
        self._envelope = parse_envelope(self.input_envelope)
        return self

    @property
    def envelope(self) -> Envelope | None:
        """The parsed `input_envelope` (None: the card has none)."""
        return self._envelope


def threshold_problems(classes: list[str], thresholds: Any) -> list[str]:
    """What is wrong with `thresholds` for these classes, one line each naming the class and value."""
    if not isinstance(thresholds, dict):
        return [f"thresholds: expected {{class: number in (0, 1]}}, got {thresholds!r}"]
    out = [f"thresholds: no threshold for class {c!r} (expected exactly one per class {classes})"
           for c in classes if c not in thresholds]
    out += [f"thresholds.{k}: {k!r} is not a class of this model (classes {classes})"
            for k in thresholds if k not in classes]
    for c in classes:
        if c not in thresholds:
            continue
        v = thresholds[c]
        if isinstance(v, bool) or not isinstance(v, int | float):
            out.append(f"thresholds.{c}: expected a number in (0, 1], got {v!r}")
        elif not math.isfinite(v):
            out.append(f"thresholds.{c}: expected a finite number in (0, 1], got {v!r}")
        elif not 0 < v <= 1:
            out.append(f"thresholds.{c}: expected a number in (0, 1], got {v!r} "
                       f"({'it would never reject this class' if v > 1 else 'it would reject every part'})")
    return out


def parse_envelope(raw: Any, where: str | None = None) -> Envelope | None:
    """The card's `input_envelope` (None when absent or empty); a malformed one raises ValueError, or
    CardRefused naming `where` when given."""
    if not raw:
        return None
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"expected an object, got {type(raw).__name__}")
        return Envelope.from_card(raw)
    except (ValueError, TypeError, KeyError) as e:
        what = str(e) if str(e).startswith("input_envelope") else f"input_envelope: {e}"
        if where is None:
            raise ValueError(what) from e
        raise CardRefused(f"{where}: {what}") from e


def parse_card(doc: bytes | str | dict[str, Any], where: Path | str) -> tuple[ModelCard, dict[str, Any]]:
    """(the typed card, its JSON as a dict) from the card's bytes or an already-read dict; CardRefused
    naming `where`, the field, what was expected and what it holds."""
    if isinstance(doc, dict):
        raw = doc
    else:
        try:
            raw = json.loads(doc)
        except ValueError as e:
            raise CardRefused(f"{where}: unreadable model card ({e})") from e
    if not isinstance(raw, dict):
        raise CardRefused(f"{where}: unreadable model card (expected a JSON object, got {type(raw).__name__})")
    try:
        return ModelCard.model_validate(raw), raw
    except ValidationError as e:
        raise CardRefused(f"{where}: model card refused: {describe(e)}") from e


def read_card(path: Path | str) -> tuple[ModelCard, dict[str, Any], bytes]:
    """A bundle folder's card (or the card file itself): (typed card, dict, the bytes read)."""
    path = Path(path)
    card_path = path if path.suffix == ".json" else path / CARD_NAME
    try:
        data = card_path.read_bytes()
    except FileNotFoundError as e:
        raise CardRefused(f"{card_path} is missing: a model bundle needs its model card") from e
    except OSError as e:
        raise CardRefused(f"{card_path}: unreadable model card ({e})") from e
    card, raw = parse_card(data, card_path)
    return card, raw, data


def write_card(bundle_dir: Path | str, raw: dict[str, Any]) -> ModelCard:
    """Checks `raw` against the schema, then writes it as the bundle's card (temp file + rename): a
    card the runtime would refuse is never written."""
    card_path = Path(bundle_dir) / CARD_NAME
    card, _ = parse_card(raw, card_path)
    tmp = card_path.with_name(f".{CARD_NAME}.tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    tmp.replace(card_path)
    return card


def describe(e: ValidationError) -> str:
    """A pydantic error as one line per problem: `field: expected ..., got ...`."""
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = "" if err["type"] in ("value_error", "missing") else f", got {_short(err.get('input'))}"
        out.append(f"{loc}: {msg}{got}" if loc else msg)
    return "; ".join(out)


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "…"
