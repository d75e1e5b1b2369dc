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
at start; promote and rollback move it (before they switch the model: a pointer that cannot be
written, a full disk, switches nothing). It also carries the rollback guard's progress (`guard`).

Interrupted stages: a `stage`/`pull` killed mid-copy leaves its `.staging-*` folder. Each stager holds
an exclusive flock on its staging folder for as long as it writes it (the kernel drops the lock when
the process dies, kill -9 included), and creates it under a shared flock on `ROOT/.staging.lock`;
`clean_staging` (at service start and before every stage) takes that lock exclusively and removes
only the staging folders whose own lock it can take: their writer is gone. A live stage, in this
process or another, is never touched; no pid or age guess.

Modes (docs/deploy.md), applied explicitly: mkdtemp/mkstemp create 0700/0600 whatever the unit's
UMask, and `shutil.copy2` copies the source's mode. Bundle folders 0750 and their files 0640, the
pointer 0640, `active/` 0750; the store root and the NAME folders 0750, or 2770 with
`lifecycle.socket_group` (its members stage bundles; the setgid bit makes what they create belong to
the group, and every folder and file is also chowned to it). So members of the group can `model list`
and the service reads what they staged. An unreadable store is a `ModelError` naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.bundle import CARD_NAME, SIG_NAME, hashing
from inspector.bundle.card import ModelCard, read_card
from inspector.bundle.signing import BundleRefused, Trust, verify_card
from inspector.bundle.verify import VerifiedBundle, card_from_bytes, check_card, verify_bundle
from inspector.errors import ModelError
from inspector.kernel.durable import fsync_path, write_atomic_json
from inspector.kernel.s3 import is_not_found, s3_client, split_s3_url

log = logging.getLogger(__name__)

_PART = re.compile(r"^[A-Za-z0-9_.+\-]+$")
_HISTORY = 20  # pointer moves remembered (rollback needs one)
STAGING_PREFIX = ".staging-"
STAGING_LOCK = ".staging.lock"
FILE_MODE = 0o640  # bundle files, the pointer
DIR_MODE = 0o750  # bundle folders, active/; the root and NAME folders without a group
GROUP_DIR_MODE = 0o2770  # the root and NAME folders with lifecycle.socket_group: members stage into them


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


def _card_ref(card: ModelCard) -> ModelRef:
    return ModelRef(card.name, card.version)  # the card's schema: both usable as folder names


def bundle_files(card: ModelCard) -> list[str]:
    """The files of a bundle: the card, then every model file it names."""
    names = [CARD_NAME]
    for entry in card.files.values():
        names += [entry.xml, entry.bin]
    return names


@dataclass(frozen=True)
class StoredVersion:
    ref: ModelRef
    path: Path
    created: str | None  # from the card
    signed: bool


class ModelStore:
    def __init__(self, root: Path | str, station: str, group: str | None = None) -> None:
        self.root = Path(root)
        self.station = station
        self.group = group  # lifecycle.socket_group: its members share the store
        self._gid: int | None = None
        if group is not None:
            try:
                self._gid = grp.getgrnam(group).gr_gid
            except KeyError as e:
                raise ModelError(f"lifecycle.socket_group: no group {group!r} on this machine") from e
        self._pointer_lock = threading.Lock()  # read-modify-write of the pointer (promote, guard progress)

    # -- modes -------------------------------------------------------------------------------------
    def _own(self, path: Path, mode: int) -> None:
        """Gives `path` its documented mode (and the group); PermissionError -> ModelError."""
        try:
            if self._gid is not None and os.stat(path).st_gid != self._gid:
                os.chown(path, -1, self._gid)
            os.chmod(path, mode)
        except PermissionError as e:
            raise self._denied(path, e) from e

    def _folder(self, path: Path, mode: int) -> None:
        """Makes `path` (mode `mode`) and the folders between it and the store root (shared mode)."""
        rel = path.relative_to(self.root).parts
        chain = [self.root, *(self.root.joinpath(*rel[:i]) for i in range(1, len(rel) + 1))]
        for p in chain:
            try:
                if p.is_dir():
                    continue
                p.mkdir(parents=p == self.root, exist_ok=True)
            except PermissionError as e:
                raise self._denied(p, e) from e
            self._own(p, mode if p == path else self._shared_dir_mode)

    @property
    def _shared_dir_mode(self) -> int:
        return DIR_MODE if self._gid is None else GROUP_DIR_MODE

    def _denied(self, path: Path, e: OSError) -> ModelError:
        who = f"members of group {self.group}" if self.group else "its owner"
        return ModelError(f"{path}: permission denied ({e.strerror}): the model store {self.root} is for the "
                          f"service's user and {who} (lifecycle.socket_group); run as one of them "
                          "(docs/deploy.md, 'A new model on the line')")

    # -- bundles ---------------------------------------------------------------------------------
    def path(self, ref: ModelRef) -> Path:
        return self.root / ref.name / ref.version

    def has(self, ref: ModelRef) -> bool:
        try:
            return (self.path(ref) / CARD_NAME).exists()
        except PermissionError as e:
            raise self._denied(self.path(ref), e) from e

    def versions(self) -> list[StoredVersion]:
        try:
            return self._versions()
        except PermissionError as e:
            raise self._denied(Path(e.filename or self.root), e) from e

    def _versions(self) -> list[StoredVersion]:
        out: list[StoredVersion] = []
        if not self.root.is_dir():
            return out
        for name_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "active"
                               and not p.name.startswith(".")):
            for v in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                card_path = v / CARD_NAME
                if not card_path.exists():
                    continue
                try:
                    created = read_card(card_path)[0].created
                except BundleRefused:  # listed all the same: verify, promote and start refuse it, naming why
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
        card = check_card(src, trust).card  # the card and its signature before copying anything
        ref = _card_ref(card)
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
        self._folder(final.parent, self._shared_dir_mode)
        self.clean_staging()
        with self._staging(final.parent, ref) as tmp:
            fill(tmp)
            for f in tmp.iterdir():  # copy2 kept the source's mode; a group member's bundle must be readable
                self._own(f, FILE_MODE)
            vb = verify_bundle(tmp, trust, expect=ref, precision=precision)
            for f in tmp.iterdir():
                fsync_path(f)
            if final.exists():
                if _same_files(tmp, final):
                    log.info("store: %s already staged (identical)", ref)
                    return vb.at(final)
                raise BundleRefused(f"{final}: {ref} is already in the store with different files; a version "
                                    "is immutable: give the new bundle a new version in its card")
            self._own(tmp, DIR_MODE)  # mkdtemp made it 0700
            os.rename(tmp, final)
            fsync_path(final.parent)
            log.info("store: staged %s from %s", ref, origin)
            return vb.at(final)

    @contextlib.contextmanager
    def _staging(self, parent: Path, ref: ModelRef):
        """A staging folder beside the final place, flocked while this process fills it; removed after."""
        with self._staging_lock(fcntl.LOCK_SH):  # clean_staging never sees it unlocked
            tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{ref.version}-", dir=parent))
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if self._gid is not None:
            self._own(tmp, 0o770)  # if it dies, another member of the group can clean it up
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            os.close(fd)

    @contextlib.contextmanager
    def _staging_lock(self, how: int):
        path = self.root / STAGING_LOCK
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)
        except PermissionError as e:
            raise self._denied(path, e) from e
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE and os.fstat(fd).st_uid == os.geteuid():
                self._own(path, FILE_MODE)
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # drops the flock

    def clean_staging(self) -> list[Path]:
        """Removes the `.staging-*` folders of stages that died (kill -9, power cut): those whose
        writer no longer holds their flock. Returns what it removed."""
        if not self.root.is_dir():
            return []
        removed: list[Path] = []
        with self._staging_lock(fcntl.LOCK_EX):
            for d in sorted(self.root.glob(f"*/{STAGING_PREFIX}*")):
                try:
                    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    continue  # gone already, or not a folder
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive
                finally:
                    os.close(fd)
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                shutil.rmtree(d, ignore_errors=True)
                if not d.exists():
                    removed.append(d)
                    log.warning("store: removed %s (%.1f MB), left by an interrupted stage or pull", d, size / 1e6)
        return removed

    # -- the pointer -----------------------------------------------------------------------------
    @property
    def pointer_path(self) -> Path:
        return self.root / "active" / f"{self.station}.json"

    def active_ref(self) -> ModelRef | None:
        doc = self.active()
        return None if doc is None else ModelRef(doc["name"], doc["version"])

    def previous_ref(self) -> ModelRef | None:
        doc = self.active()
        prev = (doc or {}).get("previous")
        return None if not prev else ModelRef(prev["name"], prev["version"])

    def active(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.pointer_path.read_text())
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise self._denied(self.pointer_path, e) from e
        except (OSError, ValueError) as e:
            raise ModelError(f"{self.pointer_path}: unreadable pointer file ({e})") from e
        return doc

    def set_active(self, ref: ModelRef, *, why: str, previous: ModelRef | None = None,
                   guard: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Moves the pointer to `ref` (atomically, durably: returns once it is on disk); `previous` is
        what a rollback returns to, `guard` the rollback guard's progress on `ref` (None: not watched).
        Returns the pointer it replaced (for `restore`). Raises OSError (ENOSPC...) with nothing moved."""
        with self._pointer_lock:
            doc = self.active()
            history = list((doc or {}).get("history", []))[-(_HISTORY - 1):]
            history.append({"name": ref.name, "version": ref.version, "why": why, "at": time.time()})
            new = {"name": ref.name, "version": ref.version,
                   "previous": None if previous is None else {"name": previous.name, "version": previous.version},
                   "updated_at": time.time(), "why": why, "history": history, "guard": guard}
            self._write_pointer(new)
            return doc

    def restore(self, doc: dict[str, Any] | None) -> None:
        """Puts back a pointer `set_active` returned (a switch that did not happen after all)."""
        with self._pointer_lock:
            if doc is None:
                self.pointer_path.unlink(missing_ok=True)
                fsync_path(self.pointer_path.parent)
            else:
                self._write_pointer(doc)

    def set_guard(self, ref: ModelRef, guard: dict[str, Any] | None) -> bool:
        """Records the rollback guard's progress on `ref` in the pointer (None: the guard is done); a
        pointer that names another version is left alone (returns False)."""
        with self._pointer_lock:
            doc = self.active()
            if doc is None or ModelRef(doc["name"], doc["version"]) != ref:
                return False
            if doc.get("guard") == guard:
                return True
            self._write_pointer({**doc, "guard": guard, "updated_at": time.time()})
            return True

    def guard_progress(self) -> dict[str, Any] | None:
        """The rollback guard's progress the pointer keeps for its version; None when not watched."""
        doc = self.active()
        return None if doc is None else doc.get("guard")

    def _write_pointer(self, doc: dict[str, Any]) -> None:
        self._folder(self.pointer_path.parent, DIR_MODE)
        write_atomic_json(self.pointer_path, doc, mode=FILE_MODE, gid=self._gid)


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(hashing.sha256_file(a / n) == hashing.sha256_file(b / n) for n in names)


# -- the remote store --------------------------------------------------------------------------------
def pull(store: ModelStore, remote: str, ref: ModelRef, trust: Trust, *, endpoint_url: str | None = None,
         region: str = "us-east-1", client=None) -> ModelRef:
    """Downloads REMOTE/NAME/VERSION/ into the store, checked: the card and its signature first (an
    unsigned or badly signed card stops the pull before any weights are fetched), then each file the
    card names, each sha256 against the card. Nothing reaches the store unless all pass."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(remote)
    base = "/".join(p for p in (prefix, ref.name, ref.version) if p)
    client = client or s3_client(endpoint_url=endpoint_url, region=region)

    def get(name: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=f"{base}/{name}")["Body"].read()
        except ClientError as e:
            if is_not_found(e):
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
    card = card_from_bytes(card_bytes, f"s3://{bucket}/{base}/{CARD_NAME}")[0]  # the schema, before any weights
    if _card_ref(card) != ref:
        raise BundleRefused(f"s3://{bucket}/{base}/{CARD_NAME}: the card says {_card_ref(card)}, "
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
