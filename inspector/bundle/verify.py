"""The one check a model bundle passes before it is staged, pulled, started on, promoted or shadowed.

`verify_bundle` reads the card once, checks its signature (when the store requires one) over the
bytes it read, its schema (`card.ModelCard`: classes, input, thresholds, input_envelope), that it
names the expected version, and every model file's sha256. The precision about to be compiled is
read into memory once, hashed from those bytes, and handed on (`VerifiedBundle.blobs`): the detector
compiles exactly the bytes that were checked, so a file replaced between the check and the compile
is never loaded, and nothing is hashed twice. The checks against the IR and the config (labels,
input shape and channels, output width, `model.classes`, `model.input_size`) run where the model is
compiled (`inference.detector.Detector`), on the same path at start, promote and shadow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from inspector.bundle import CARD_NAME, hashing
from inspector.bundle import card as cardmod
from inspector.bundle.card import ModelCard, parse_card
from inspector.bundle.signing import BundleRefused, Trust, verify_card


class _Ref(Protocol):
    name: str
    version: str


class Blobs:
    """A precision's IR as read and hashed: given to one compile (`take`), then let go (a 300 MB model
    is not kept twice in memory for the life of the service)."""

    def __init__(self, xml: bytes, weights: bytes) -> None:
        self._lock = threading.Lock()
        self._data: tuple[bytes, bytes] | None = (xml, weights)

    def take(self) -> tuple[bytes, bytes] | None:
        """(xml, bin) the first time, None afterwards (then the file is read and hashed again)."""
        with self._lock:
            data, self._data = self._data, None
        return data


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    card: ModelCard
    raw: dict[str, Any] = field(repr=False)  # the card's JSON, as written
    card_bytes: bytes = field(repr=False)
    precision: str | None = None
    blobs: Blobs | None = field(default=None, repr=False, compare=False)

    def at(self, path: Path) -> VerifiedBundle:
        """The same verified bundle after its folder was renamed (staging -> the store)."""
        return replace(self, path=Path(path))


def verify_bundle(path: Path | str, trust: Trust | None = None, *, expect: _Ref | None = None,
                  precision: str | None = None, every_file: bool = True) -> VerifiedBundle:
    """Every check a bundle must pass (see the module doc). `trust` None: no signature is required
    (a bundle outside the store: `model.path` with the lifecycle off, `model build`). `precision`: the
    IR to keep in memory for the compile (it must be in the card). `every_file` False: only that
    precision's files are hashed (tools reading one IR). Raises BundleRefused (a ModelError: exit 2)
    naming the file or field, what was expected and what was found."""
    path = Path(path)
    card_path = path / CARD_NAME
    if not path.is_dir():
        raise BundleRefused(f"model bundle {path} does not exist or is not a folder (expected a folder with "
                            f"{CARD_NAME})")
    card, raw, card_bytes = cardmod.read_card(path)
    if trust is not None:
        verify_card(path, trust, card_bytes=card_bytes)
    if expect is not None and (card.name, card.version) != (expect.name, expect.version):
        raise BundleRefused(f"{card_path}: the card says {card.name}@{card.version}, expected "
                            f"{expect.name}@{expect.version} (the store folder it is in)")
    if precision is not None and precision not in card.files:
        raise BundleRefused(f"{card_path}: no '{precision}' model in this bundle (has: {sorted(card.files)})")
    blobs = None
    for prec, entry in card.files.items():
        if prec == precision:
            xml = _read_checked(path / entry.xml, entry.xml_sha256, card_path)
            weights = _read_checked(path / entry.bin, entry.bin_sha256, card_path)
            blobs = Blobs(xml, weights)
        elif every_file:
            for name, want in ((entry.xml, entry.xml_sha256), (entry.bin, entry.bin_sha256)):
                f = path / name
                _exists(f, card_path)
                _match(f, want, hashing.sha256_file(f))
    return VerifiedBundle(path, card, raw, card_bytes, precision, blobs)


def check_card(path: Path | str, trust: Trust | None = None) -> VerifiedBundle:
    """The card alone (schema and signature), before anything is copied or downloaded; no file hashed."""
    path = Path(path)
    card, raw, card_bytes = cardmod.read_card(path)
    if trust is not None:
        verify_card(path, trust, card_bytes=card_bytes)
    return VerifiedBundle(path, card, raw, card_bytes)


def card_from_bytes(card_bytes: bytes, where: Path | str) -> tuple[ModelCard, dict[str, Any]]:
    """A downloaded card (the pull checks it before fetching any weights)."""
    return parse_card(card_bytes, where)


def _read_checked(f: Path, want: str, card_path: Path) -> bytes:
    _exists(f, card_path)
    try:
        data = f.read_bytes()
    except OSError as e:
        raise BundleRefused(f"{f}: unreadable ({e})") from e
    _match(f, want, hashing.sha256_bytes(data))
    return data


def _exists(f: Path, card_path: Path) -> None:
    if not f.is_file():
        raise BundleRefused(f"{f}: missing (named in {card_path})")


def _match(f: Path, want: str, got: str) -> None:
    if got != want:
        raise BundleRefused(f"{f}: sha256 mismatch: the card says {want[:16]}…, the file is {got[:16]}… "
                            "(tampered, corrupt or replaced)")
