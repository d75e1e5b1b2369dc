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

from inspector.bundle.card import CARD_NAME, sha256_file
from inspector.bundle.verify import VerifiedBundle, card_from_bytes, check_card, verify_bundle
from inspector.errors import ModelError
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


# `verify_bundle` (imported above) is the one check every bundle passes, here as at start, promote and
# shadow: the card's schema and signature, the version it names, every file's sha256.


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

    def verify(self, ref: ModelRef, trust: Trust, precision: str | None = None) -> VerifiedBundle:
        """Checks a stored version again (start, promote and shadow do, right before they load it);
        `precision`'s IR comes back as read and hashed, for the compile."""
        if not self.has(ref):
            known = ", ".join(str(v.ref) for v in self.versions()) or "none"
            raise ModelError(f"{ref} is not in the store {self.root} (stored: {known}); "
                             f"`inspector model pull {ref}` or `inspector model stage DIR` first")
        return verify_bundle(self.path(ref), trust, expect=ref, precision=precision)

    def stage(self, src: Path | str, trust: Trust) -> ModelRef:
        """Copies a bundle folder into the store, checked (see the module docstring)."""
        src = Path(src)
        vb = self.stage_verified(src, trust)
        return ModelRef(vb.card.name, vb.card.version)

    def stage_verified(self, src: Path | str, trust: Trust, precision: str | None = None) -> VerifiedBundle:
        """`stage`, returning the bundle as verified in the store (`precision`'s IR kept for the compile:
        a first start hashes each file once, in the copy)."""
        src = Path(src)
        card = check_card(src, trust).raw  # the card and its signature before copying anything
        ref = _card_ref(card, src / CARD_NAME)
        names = bundle_files(card) + ([SIG_NAME] if (src / SIG_NAME).exists() else [])
        for n in names:  # the files are hashed once, in the copy (see _install)
            if not (src / n).is_file():
                raise BundleRefused(f"{src / n}: missing (named in {src / CARD_NAME})")

        def fill(tmp: Path) -> None:
            for n in names:
                shutil.copy2(src / n, tmp / n)

        return self._install(ref, fill, trust, origin=str(src), precision=precision)

    def _install(self, ref: ModelRef, fill, trust: Trust, origin: str,
                 precision: str | None = None) -> VerifiedBundle:
        final = self.path(ref)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".staging-{ref.version}-", dir=final.parent))
        try:
            fill(tmp)
            vb = verify_bundle(tmp, trust, expect=ref, precision=precision)
            for f in tmp.iterdir():
                _fsync(f)
            if final.exists():
                if _same_files(tmp, final):
                    log.info("store: %s already staged (identical)", ref)
                    return vb.at(final)
                raise BundleRefused(f"{final}: {ref} is already in the store with different files; a version "
                                    "is immutable: give the new bundle a new version in its card")
            os.rename(tmp, final)
            _fsync_dir(final.parent)
            log.info("store: staged %s from %s", ref, origin)
            return vb.at(final)
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
    card = card_from_bytes(card_bytes, f"s3://{bucket}/{base}/{CARD_NAME}")[1]  # the schema, before any weights
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
