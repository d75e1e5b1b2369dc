"""The model card's signature: `model_card.sig` beside `model_card.json` in a bundle.

The card lists the sha256 of every model file, so a valid signature over the card's exact bytes
vouches for the whole bundle. Two schemes (config `lifecycle.signature`):
- hmac-sha256: a key the plant's model build and the line PCs share; stdlib `hmac` only, always
  available. Whoever holds the key can also sign.
- ed25519: the build signs with its private key, the line holds only the public key. Needs
  `cryptography` (the `signing` extra), imported only when this scheme is configured, so the
  line-side runtime stays light by default.

`model_card.sig` is JSON: {"alg": "hmac-sha256" | "ed25519", "key_id": str | null, "signature": base64}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from inspector.bundle import CARD_NAME, SIG_NAME
from inspector.errors import ModelError

ALGS = ("hmac-sha256", "ed25519")


class BundleRefused(ModelError):
    """A bundle failed a check (sha256, signature, card): it is never staged nor activated."""


@dataclass(frozen=True)
class Trust:
    """What a bundle must prove. `alg` None: only the sha256s are checked."""

    alg: str | None = None
    hmac_key: bytes | None = None
    public_key: Path | None = None

    @staticmethod
    def from_config(cfg) -> Trust:
        """From a `LifecycleConfig`."""
        if cfg.signature == "none":
            return Trust()
        if cfg.signature == "hmac-sha256":
            if cfg.hmac_key is None or not cfg.hmac_key.get_secret_value():
                raise ModelError("lifecycle.signature is hmac-sha256 but no key is set: expected "
                                 "INSPECTOR_LIFECYCLE__HMAC_KEY in the environment")
            return Trust("hmac-sha256", hmac_key=cfg.hmac_key.get_secret_value().encode())
        return Trust("ed25519", public_key=cfg.public_key)


def sign_card(bundle: Path, alg: str, *, hmac_key: bytes | None = None, private_key: Path | None = None,
              key_id: str | None = None) -> Path:
    """Writes BUNDLE/model_card.sig over the card's exact bytes (the plant's build step)."""
    data = (Path(bundle) / CARD_NAME).read_bytes()
    if alg == "hmac-sha256":
        if not hmac_key:
            raise ValueError("hmac-sha256 signing needs a key")
        sig = hmac.new(hmac_key, data, hashlib.sha256).digest()
    elif alg == "ed25519":
        key = _crypto().load_pem_private_key(Path(private_key).read_bytes(), password=None)
        sig = key.sign(data)
    else:
        raise ValueError(f"signature alg: expected one of {ALGS}, got {alg!r}")
    out = Path(bundle) / SIG_NAME
    out.write_text(json.dumps({"alg": alg, "key_id": key_id, "signature": base64.b64encode(sig).decode()}) + "\n")
    return out


def verify_card(bundle: Path, trust: Trust, card_bytes: bytes | None = None, sig_bytes: bytes | None = None) -> str:
    """Checks the card's signature against `trust`; returns what was verified, in words. Raises
    BundleRefused naming the file and the reason. `card_bytes`/`sig_bytes` let a caller check what it
    downloaded before writing anything."""
    bundle = Path(bundle)
    if trust.alg is None:
        return "no signature required"
    card_path, sig_path = bundle / CARD_NAME, bundle / SIG_NAME
    if card_bytes is None:
        card_bytes = card_path.read_bytes()
    if sig_bytes is None:
        if not sig_path.exists():
            raise BundleRefused(f"{sig_path}: missing: lifecycle.signature requires a {trust.alg} signature "
                                "of the model card")
        sig_bytes = sig_path.read_bytes()
    try:
        sig_doc = json.loads(sig_bytes)
        alg, sig = sig_doc["alg"], base64.b64decode(sig_doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise BundleRefused(f"{sig_path}: unreadable signature file ({type(e).__name__}: {e})") from e
    if alg != trust.alg:
        raise BundleRefused(f"{sig_path}: signature alg is {alg!r}, expected {trust.alg!r} (lifecycle.signature)")
    if alg == "hmac-sha256":
        want = hmac.new(trust.hmac_key or b"", card_bytes, hashlib.sha256).digest()
        if not hmac.compare_digest(want, sig):
            raise BundleRefused(f"{sig_path}: bad signature: the model card does not match its hmac-sha256 "
                                "signature under the plant's key (card altered, or signed with another key)")
        return "hmac-sha256 signature valid"
    crypto = _crypto()
    try:
        key = crypto.load_pem_public_key(Path(trust.public_key).read_bytes())
    except (OSError, ValueError) as e:
        raise BundleRefused(f"{trust.public_key}: cannot read the ed25519 public key ({e})") from e
    try:
        key.verify(sig, card_bytes)
    except Exception as e:  # cryptography's InvalidSignature (or a key of another type)
        raise BundleRefused(f"{sig_path}: bad signature: the model card does not verify under "
                            f"{trust.public_key} ({type(e).__name__}; card altered or signed with another key)") from e
    return "ed25519 signature valid"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError as e:  # the runtime does not need it unless ed25519 is configured
        raise ModelError("lifecycle.signature ed25519 needs the `cryptography` package: "
                         "pip install 'inspector[signing]'") from e
    return serialization
