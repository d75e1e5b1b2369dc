"""Where the uploader stores objects: an S3 bucket (AWS, MinIO) or a folder.

  s3://bucket[/prefix]   the kernel's S3 client (kernel/s3.py); `upload.endpoint_url` for MinIO or another
                         S3-compatible store. Credentials: INSPECTOR_UPLOAD__ACCESS_KEY / __SECRET_KEY if
                         set, otherwise boto3's standard chain. Never the YAML.
  file:///abs/path       a directory (air-gapped sites that sync a share); `file://rel/path` is relative to
                         the working directory (the demo default `file://var/uploads`).

`put` stores and verifies: S3 with Content-MD5 (the server refuses a corrupted body) and the returned ETag
equal to our MD5 (the server's checksum of what it stored); a folder by reading the file back and comparing
its size and sha256.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inspector.config import UploadConfig
from inspector.errors import SpoolError
from inspector.kernel.durable import write_atomic
from inspector.kernel.s3 import is_not_found, s3_client, split_s3_url


class VerifyError(Exception):
    """The destination does not hold what we sent."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    md5: str | None  # hex; None when the destination has no cheap checksum (file://, multipart ETag)


class Destination(Protocol):
    url: str

    def key(self, rel: str) -> str: ...

    def uri(self, key: str) -> str:
        """Where a reviewer finds the object (printed in summaries)."""

    def listing(self, prefix: str) -> dict[str, ObjectInfo]: ...

    def same(self, key: str, info: ObjectInfo, size: int, md5: str, sha256: str) -> bool: ...

    def put(self, key: str, data: bytes, *, md5: str, sha256: str, content_type: str) -> None:
        """Stores and verifies; raises VerifyError / OSError / botocore errors."""

    def get(self, key: str) -> bytes | None: ...


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


class S3Destination:
    def __init__(self, bucket: str, prefix: str, cfg: UploadConfig) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        keys = {}
        if cfg.access_key is not None and cfg.secret_key is not None:
            keys = {"access_key": cfg.access_key.get_secret_value(), "secret_key": cfg.secret_key.get_secret_value()}
        # retries=1: our own retry loop (`Uploader._retry`) owns the backoff and the give-up (kernel/s3.py).
        self._client = s3_client(endpoint_url=cfg.endpoint_url, region=cfg.region, retries=1,
                                 max_connections=cfg.concurrency + 2, **keys)

    def key(self, rel: str) -> str:
        return _join(self.prefix, rel)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        out: dict[str, ObjectInfo] = {}
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                etag = o.get("ETag", "").strip('"')
                out[o["Key"]] = ObjectInfo(int(o["Size"]), None if "-" in etag else etag)
        return out

    def same(self, key: str, info: ObjectInfo, size: int, md5: str, sha256: str) -> bool:
        if info.size != size:
            return False
        if info.md5 is not None:
            return info.md5 == md5
        head = self._client.head_object(Bucket=self.bucket, Key=key)
        return head.get("Metadata", {}).get("sha256") == sha256

    def put(self, key: str, data: bytes, *, md5: str, sha256: str, content_type: str) -> None:
        resp = self._client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
            ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(), Metadata={"sha256": sha256},
        )
        etag = resp.get("ETag", "").strip('"')
        if etag != md5:
            raise VerifyError(f"{key}: expected ETag {md5} (our MD5 of {len(data)} bytes), got {etag!r}")

    def presign(self, key: str, expires_s: int) -> str:
        """A GET URL a labelling tool (or a browser) can fetch without credentials (review export)."""
        return self._client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                   ExpiresIn=int(expires_s))

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if is_not_found(e):
                return None
            raise


class FileDestination:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.absolute().as_uri()

    def key(self, rel: str) -> str:
        return rel

    def uri(self, key: str) -> str:
        return self._path(key).absolute().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        base = self._path(prefix)
        out: dict[str, ObjectInfo] = {}
        if base.is_dir():
            for p in base.iterdir():
                if p.is_file() and not p.name.endswith(".tmp"):
                    out[f"{prefix}{p.name}"] = ObjectInfo(p.stat().st_size, None)
        return out

    def same(self, key: str, info: ObjectInfo, size: int, md5: str, sha256: str) -> bool:
        p = self._path(key)
        return info.size == size and hashlib.sha256(p.read_bytes()).hexdigest() == sha256

    def put(self, key: str, data: bytes, *, md5: str, sha256: str, content_type: str) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, data, tmp=p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp"), sync_dir=True)
        back = p.read_bytes()
        got = hashlib.sha256(back).hexdigest()
        if len(back) != len(data) or got != sha256:
            raise VerifyError(f"{p}: expected {len(data)} bytes sha256 {sha256}, "
                              f"read back {len(back)} bytes sha256 {got}")

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None


def open_destination(cfg: UploadConfig) -> Destination:
    d = cfg.destination
    if d.startswith("s3://"):
        return S3Destination(*split_s3_url(d), cfg)
    if d.startswith("file://"):
        rest = d[len("file://"):]
        # file:///abs -> /abs; file://rel/path -> ./rel/path (the demo default file://var/uploads)
        return FileDestination(Path(rest) if rest.startswith("/") else Path.cwd() / rest)
    raise SpoolError(f"upload.destination: expected s3://bucket[/prefix] or file://path, got {d!r}")
