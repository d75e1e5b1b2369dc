"""The plant's build side of the remote model store, for the tests: a bundle folder uploaded to
REMOTE/NAME/VERSION/ the way `inspector model pull` (lifecycle/store.py) reads it. Not part of the service:
nothing on the line imports it."""

from __future__ import annotations

from pathlib import Path

from inspector.bundle import SIG_NAME
from inspector.bundle.card import read_card
from inspector.kernel.s3 import s3_client, split_s3_url
from inspector.lifecycle.store import ModelRef, bundle_files


def push(bundle: Path, remote: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
         client=None) -> ModelRef:
    """Uploads a bundle folder to REMOTE/NAME/VERSION/, the card last (a reader that finds it finds the files)."""
    bundle = Path(bundle)
    card = read_card(bundle)[0]
    ref = ModelRef(card.name, card.version)
    bucket, prefix = split_s3_url(remote)
    base = "/".join(p for p in (prefix, ref.name, ref.version) if p)
    client = client or s3_client(endpoint_url=endpoint_url, region=region)
    names = bundle_files(card) + ([SIG_NAME] if (bundle / SIG_NAME).exists() else [])
    for n in names[1:] + names[:1]:
        client.upload_file(str(bundle / n), bucket, f"{base}/{n}")
    return ref
