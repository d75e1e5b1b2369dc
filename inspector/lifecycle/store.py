"""The model store: versioned bundles on disk, the active version per station, pulls from S3.

Layout (root = `lifecycle.store`):

    ROOT/NAME/VERSION/           a bundle: model_card.json (+ model_card.sig), the IR files it names
    ROOT/active/<station>.json   the pointer: {"name", "version", "previous", "history", "updated_at"}

A bundle enters the store only whole and checked: it is copied (or downloaded) into a hidden
staging folder beside its final place, every file's sha256 is checked against the card, the card
against its signature (`signing.Trust`), then one rename makes it appear. A failed check removes the
staging folder and raises `BundleRefused`; nothing half-written is ever listed or activated.

The pointer file is written atomically (temp file, fsync, rename, fsync of the folder): after a
power cut it names the old version or the new one, never neither. The running service follows it
at start; promote and rollback move it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.errors import ModelError
from inspector.inference.detector import CARD_NAME, sha256_file
from inspector.lifecycle.signing import SIG_NAME, BundleRefused, Trust, verify_card

log = logging.getLogger(__name__)

_PART = re.compile(r"^[A-Za-z0-9_.+\-]+$")
_HISTORY = 20  # pointer moves remembered (rollback needs one)


@dataclass(frozen=True, order=True)
class ModelRef:
    name: str
    version: str

    @staticmethod
    def parse(text: str) -> ModelRef:
        name, at, version = text.partition("@")
        if not at or not _PART.match(name or "") or not _PART.match(version or "") or name.startswith("."):
            raise ValueError(f"model reference: expected NAME@VERSION (letters, digits, _ . + -), got {text!r}")
        return ModelRef(name, version)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def verify_bundle(path: Path, trust: Trust, expect: ModelRef | None = None) -> dict[str, Any]:
    """Every check a bundle must pass before it is staged or judges a part: the card reads, names
    `expect` (the folder it sits in), its signature holds, and every file it lists (each precision's
    xml and bin) has the card's sha256. Returns the card. Raises BundleRefused saying which file and
    what was expected."""
    path = Path(path)
    card_path = path / CARD_NAME
    try:
        card_bytes = card_path.read_bytes()
        card = json.loads(card_bytes)
    except FileNotFoundError as e:
        raise BundleRefused(f"{card_path}: missing: a bundle needs its model card") from e
    except (OSError, ValueError) as e:
        raise BundleRefused(f"{card_path}: unreadable model card ({e})") from e
    verify_card(path, trust, card_bytes=card_bytes)
    ref = _card_ref(card, card_path)
    if expect is not None and ref != expect:
        raise BundleRefused(f"{card_path}: the card says {ref}, expected {expect} (the store folder it is in)")
    files = card.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleRefused(f"{card_path}: no 'files' in the card: nothing to check the weights against")
    for precision, entry in files.items():
        for kind in ("xml", "bin"):
            name, want = entry.get(kind), entry.get(f"{kind}_sha256")
            if not name or not want:
                raise BundleRefused(f"{card_path}: files.{precision} has no {kind} or {kind}_sha256: "
                                    "every model file needs its sha256 in the card")
            f = path / name
            if Path(name).name != name:
                raise BundleRefused(f"{card_path}: files.{precision}.{kind} {name!r} is not a plain file name")
            if not f.exists():
                raise BundleRefused(f"{f}: missing (named in {card_path})")
            got = sha256_file(f)
            if got != want:
                raise BundleRefused(f"{f}: sha256 mismatch: the card says {want[:16]}…, the file is {got[:16]}… "
                                    "(tampered, corrupt or replaced)")
    return card


def _card_ref(card: dict[str, Any], where: Path) -> ModelRef:
    try:
        return ModelRef.parse(f"{card['name']}@{card['version']}")
    except (KeyError, ValueError) as e:
        raise BundleRefused(f"{where}: the card needs a name and a version usable in a path ({e})") from e


def bundle_files(card: dict[str, Any]) -> list[str]:
    """The files of a bundle: the card, then every model file it names."""
    names = [CARD_NAME]
    for entry in card.get("files", {}).values():
        names += [entry["xml"], entry["bin"]]
    return names


@dataclass(frozen=True)
class StoredVersion:
    ref: ModelRef
    path: Path
    created: str | None  # from the card
    signed: bool


class ModelStore:
    def __init__(self, root: Path | str, station: str) -> None:
        self.root = Path(root)
        self.station = station

    # -- bundles ---------------------------------------------------------------------------------
    def path(self, ref: ModelRef) -> Path:
        return self.root / ref.name / ref.version

    def has(self, ref: ModelRef) -> bool:
        return (self.path(ref) / CARD_NAME).exists()

    def versions(self) -> list[StoredVersion]:
        out = []
        if not self.root.is_dir():
            return out
        for name_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "active"
                               and not p.name.startswith(".")):
            for v in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                card_path = v / CARD_NAME
                if not card_path.exists():
                    continue
                try:
                    created = json.loads(card_path.read_text()).get("created")
                except (OSError, ValueError):
                    created = None
                out.append(StoredVersion(ModelRef(name_dir.name, v.name), v, created, (v / SIG_NAME).exists()))
        return out

    def verify(self, ref: ModelRef, trust: Trust) -> dict[str, Any]:
        """Checks a stored version again (promote and shadow do, right before they load it)."""
        if not self.has(ref):
            known = ", ".join(str(v.ref) for v in self.versions()) or "none"
            raise ModelError(f"{ref} is not in the store {self.root} (stored: {known}); "
                             f"`inspector model pull {ref}` or `inspector model stage DIR` first")
        return verify_bundle(self.path(ref), trust, expect=ref)

    def stage(self, src: Path | str, trust: Trust) -> ModelRef:
        """Copies a bundle folder into the store, checked (see the module docstring)."""
        src = Path(src)
        card = verify_bundle(src, trust)  # refuse early, before copying anything
        ref = _card_ref(card, src / CARD_NAME)
        names = bundle_files(card) + ([SIG_NAME] if (src / SIG_NAME).exists() else [])

        def fill(tmp: Path) -> None:
            for n in names:
                shutil.copy2(src / n, tmp / n)

        self._install(ref, fill, trust, origin=str(src))
        return ref

    def _install(self, ref: ModelRef, fill, trust: Trust, origin: str) -> None:
        final = self.path(ref)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".staging-{ref.version}-", dir=final.parent))
        try:
            fill(tmp)
            verify_bundle(tmp, trust, expect=ref)
            for f in tmp.iterdir():
                _fsync(f)
            if final.exists():
                if _same_files(tmp, final):
                    log.info("store: %s already staged (identical)", ref)
                    return
                raise BundleRefused(f"{final}: {ref} is already in the store with different files; a version "
                                    "is immutable: give the new bundle a new version in its card")
            os.rename(tmp, final)
            _fsync_dir(final.parent)
            log.info("store: staged %s from %s", ref, origin)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- the pointer -----------------------------------------------------------------------------
    @property
    def pointer_path(self) -> Path:
        return self.root / "active" / f"{self.station}.json"

    def active(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.pointer_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ModelError(f"{self.pointer_path}: unreadable pointer file ({e})") from e
        return doc

    def active_ref(self) -> ModelRef | None:
        doc = self.active()
        return None if doc is None else ModelRef(doc["name"], doc["version"])

    def previous_ref(self) -> ModelRef | None:
        doc = self.active()
        prev = (doc or {}).get("previous")
        return None if not prev else ModelRef(prev["name"], prev["version"])

    def set_active(self, ref: ModelRef, *, why: str, previous: ModelRef | None = None) -> None:
        """Moves the pointer to `ref` (atomically); `previous` is what a rollback returns to."""
        doc = self.active() or {}
        history = list(doc.get("history", []))[-(_HISTORY - 1):]
        history.append({"name": ref.name, "version": ref.version, "why": why, "at": time.time()})
        new = {"name": ref.name, "version": ref.version,
               "previous": None if previous is None else {"name": previous.name, "version": previous.version},
               "updated_at": time.time(), "why": why, "history": history}
        write_atomic_json(self.pointer_path, new)


def write_atomic_json(path: Path, doc: dict[str, Any]) -> None:
    """Temp file in the same folder, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync(path)


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(sha256_file(a / n) == sha256_file(b / n) for n in names)


# -- the remote store --------------------------------------------------------------------------------
def split_s3(url: str) -> tuple[str, str]:
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def s3_client(endpoint_url: str | None, region: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                                      connect_timeout=10, read_timeout=60))


def pull(store: ModelStore, remote: str, ref: ModelRef, trust: Trust, *, endpoint_url: str | None = None,
         region: str = "us-east-1", client=None) -> ModelRef:
    """Downloads REMOTE/NAME/VERSION/ into the store, checked: the card and its signature first (an
    unsigned or badly signed card stops the pull before any weights are fetched), then each file the
    card names, each sha256 against the card. Nothing reaches the store unless all pass."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(remote)
    base = "/".join(p for p in (prefix, ref.name, ref.version) if p)
    client = client or s3_client(endpoint_url, region)

    def get(name: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=f"{base}/{name}")["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise ModelError(f"s3://{bucket}/{base}/{name}: {e}") from e
        except BotoCoreError as e:
            raise ModelError(f"s3://{bucket}/{base}/{name}: {e}") from e

    card_bytes = get(CARD_NAME)
    if card_bytes is None:
        raise ModelError(f"s3://{bucket}/{base}/{CARD_NAME}: not found: {ref} is not in the remote store {remote}")
    sig_bytes = get(SIG_NAME)
    where = Path(f"s3://{bucket}/{base}")
    if trust.alg is not None:
        if sig_bytes is None:
            raise BundleRefused(f"s3://{bucket}/{base}/{SIG_NAME}: missing: lifecycle.signature requires a "
                                f"{trust.alg} signature of the model card")
        verify_card(where, trust, card_bytes=card_bytes, sig_bytes=sig_bytes)
    try:
        card = json.loads(card_bytes)
    except ValueError as e:
        raise BundleRefused(f"s3://{bucket}/{base}/{CARD_NAME}: unreadable model card ({e})") from e
    if _card_ref(card, where / CARD_NAME) != ref:
        raise BundleRefused(f"s3://{bucket}/{base}/{CARD_NAME}: the card says {_card_ref(card, where)}, "
                            f"expected {ref}")

    def fill(tmp: Path) -> None:
        (tmp / CARD_NAME).write_bytes(card_bytes)
        if sig_bytes is not None:
            (tmp / SIG_NAME).write_bytes(sig_bytes)
        for name in bundle_files(card)[1:]:
            if Path(name).name != name:
                raise BundleRefused(f"{where / CARD_NAME}: file {name!r} is not a plain file name")
            try:
                client.download_file(bucket, f"{base}/{name}", str(tmp / name))
            except (ClientError, BotoCoreError) as e:
                raise ModelError(f"s3://{bucket}/{base}/{name}: download failed ({e})") from e

    store._install(ref, fill, trust, origin=f"s3://{bucket}/{base}")
    return ref


def push(bundle: Path, remote: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
         client=None) -> ModelRef:
    """Uploads a bundle folder to REMOTE/NAME/VERSION/ (the plant's build side; tests)."""
    bundle = Path(bundle)
    card = json.loads((bundle / CARD_NAME).read_text())
    ref = _card_ref(card, bundle / CARD_NAME)
    bucket, prefix = split_s3(remote)
    base = "/".join(p for p in (prefix, ref.name, ref.version) if p)
    client = client or s3_client(endpoint_url, region)
    names = bundle_files(card) + ([SIG_NAME] if (bundle / SIG_NAME).exists() else [])
    for n in names[1:] + names[:1]:  # the card last: a reader that finds it finds the files
        client.upload_file(str(bundle / n), bucket, f"{base}/{n}")
    return ref
