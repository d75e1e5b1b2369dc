"""The runtime's view of a model bundle (`ModelBundle`) and how it is loaded (`load_bundle`): a bundle
folder checked by `verify.verify_bundle` (card schema, each file's sha256, read once: the bytes checked
are the bytes compiled), or a bare .xml (a development model: classes from its rt_info, no card)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inspector.bundle import CARD_NAME, hashing, ir
from inspector.bundle.card import ModelCard
from inspector.bundle.verify import Blobs, VerifiedBundle, check_card, verify_bundle
from inspector.errors import ModelError
from inspector.frames import ModelInfo


@dataclass(frozen=True)
class ModelBundle:
    """What the runtime needs to know about a model, read from its card (or from the IR itself)."""

    name: str
    version: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    thresholds: dict[str, float]
    xml: Path
    sha256: str  # of the .bin (the weights)
    precision: str
    card: ModelCard | None = field(default=None, repr=False, compare=False)  # None: a bare .xml
    channels: int = 3  # what the model's input expects: 3 (BGR frame) or 1 (grayscale); card `input_channels`
    # The IR's bytes as verified (sha256 against the card): the first Detector compiles these, not the files
    # on disk again (a file replaced between the check and the compile is never loaded).
    blobs: Blobs | None = field(default=None, repr=False, compare=False)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.version, self.sha256)

    @property
    def task(self) -> str:
        """The card's task (`detect` for a bare .xml: ultralytics' detection export)."""
        return "detect" if self.card is None else self.card.task


def load_bundle(path: Path | str, precision: str = "int8", verify: bool = True) -> ModelBundle:
    """A bundle directory with model_card.json, or a bare .xml (classes from its rt_info).

    A bundle's card is checked against its schema (`inspector.bundle.card.ModelCard`: thresholds one per
    class in (0, 1], the input_envelope, ...) and, with `verify`, the precision's files against their
    sha256s, read once: the returned bundle carries those bytes to the compile."""
    path = Path(path)
    if path.suffix == ".xml":
        return _bundle_from_xml(path, precision)
    if not path.exists():
        raise ModelError(f"model bundle {path} does not exist (expected a directory with {CARD_NAME})")
    if verify:
        return bundle_from(verify_bundle(path, precision=precision, every_file=False), precision)
    vb = check_card(path)
    if precision not in vb.card.files:
        raise ModelError(f"{path / CARD_NAME}: no '{precision}' model in this bundle (has: {sorted(vb.card.files)})")
    entry = vb.card.files[precision]
    for f in (path / entry.xml, path / entry.bin):
        if not f.exists():
            raise ModelError(f"model file {f} is missing (named in {path / CARD_NAME})")
    return bundle_from(vb, precision)


def bundle_from(vb: VerifiedBundle, precision: str) -> ModelBundle:
    """The runtime's view of a checked bundle (`inspector.bundle.verify.verify_bundle`)."""
    card = vb.card
    entry = card.files[precision]
    return ModelBundle(name=card.name, version=card.version, classes=tuple(card.classes),
                       input_size=(int(card.input_size[0]), int(card.input_size[1])),
                       thresholds=dict(card.thresholds), xml=vb.path / entry.xml, sha256=entry.bin_sha256,
                       precision=precision, card=card, channels=card.input_channels,
                       blobs=vb.blobs if vb.precision == precision else None)


def _bundle_from_xml(xml: Path, precision: str) -> ModelBundle:
    import openvino as ov

    if not xml.exists() or not xml.with_suffix(".bin").exists():
        raise ModelError(f"model {xml} (and its .bin) must exist")
    model = ov.Core().read_model(xml)
    labels = ir.rt_labels(model)
    if not labels:
        raise ModelError(f"{xml}: no class labels in rt_info (model_info/labels); use a bundle with a model card")
    h, w = ir.input_hw(model, xml)
    return ModelBundle(name=xml.stem, version="dev", classes=tuple(labels), input_size=(h, w), thresholds={},
                       xml=xml, sha256=hashing.sha256_file(xml.with_suffix(".bin")), precision=precision,
                       channels=ir.input_channels(model, xml))
