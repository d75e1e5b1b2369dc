"""The model store: staging checks every sha256 and the card's signature, nothing refused ever lands,
the pointer is replaced atomically, and `pull` from an S3-compatible server (moto) checks the same
before anything reaches the store. No inference here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inspector.bundle.signing import BundleRefused, Trust, sign_card
from inspector.devtools.model_push import push
from inspector.errors import ModelError
from inspector.lifecycle.store import ModelRef, ModelStore, pull
from tests.lifecycle.bundles import make_bundle

KEY = b"plant-key-0123456789"


def _flip_byte(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0x01
    p.write_bytes(bytes(data))


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "b", "2.0.0")


@pytest.mark.parametrize("text, ok", [("demo@1.2.0", True), ("a_b-c@1.0+build.7", True), ("demo", False),
                                      ("demo@", False), ("@1.0", False), ("../x@1", False), ("a@b/c", False)])
def test_model_refs(text, ok):
    if ok:
        assert str(ModelRef.parse(text)) == text
    else:
        with pytest.raises(ValueError, match="NAME@VERSION"):
            ModelRef.parse(text)


def test_stage_lists_and_the_pointer_moves_atomically(tmp_path, bundle):
    store = ModelStore(tmp_path / "store", "st1")
    ref = store.stage(bundle, Trust())
    assert ref == ModelRef("demo", "2.0.0") and [v.ref for v in store.versions()] == [ref]
    assert store.stage(bundle, Trust()) == ref  # identical again: a no-op
    store.set_active(ref, why="test")
    store.set_active(ModelRef("demo", "2.0.1"), why="promote", previous=ref)
    doc = json.loads(store.pointer_path.read_text())
    assert (doc["version"], doc["previous"]["version"], len(doc["history"])) == ("2.0.1", "2.0.0", 2)
    assert sorted(p.name for p in store.pointer_path.parent.iterdir()) == ["st1.json"]  # no temp file left
    assert not [p for p in (tmp_path / "store" / "demo").iterdir() if p.name.startswith(".")]


def test_a_version_is_immutable(tmp_path, bundle):
    store = ModelStore(tmp_path / "store", "st1")
    store.stage(bundle, Trust())
    card = json.loads((bundle / "model_card.json").read_text())
    card["thresholds"]["pit"] = 0.5
    (bundle / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(BundleRefused, match="already in the store with different files"):
        store.stage(bundle, Trust())


@pytest.mark.parametrize("damage, message", [
    ("bin", "model_int8.bin: sha256 mismatch"),
    ("xml", "model_int8.xml: sha256 mismatch"),
    ("no_bin", "model_int8.bin: missing"),
    ("no_sha", "has no bin or bin_sha256"),
    ("bad_card", "unreadable model card"),
])
def test_stage_refuses_a_damaged_bundle(tmp_path, bundle, damage, message):
    if damage in ("bin", "xml"):
        _flip_byte(bundle / f"model_int8.{damage}")
    elif damage == "no_bin":
        (bundle / "model_int8.bin").unlink()
    elif damage == "no_sha":
        card = json.loads((bundle / "model_card.json").read_text())
        del card["files"]["int8"]["bin_sha256"]
        (bundle / "model_card.json").write_text(json.dumps(card))
    else:
        (bundle / "model_card.json").write_text("{not json")
    store = ModelStore(tmp_path / "store", "st1")
    with pytest.raises(BundleRefused, match=message):
        store.stage(bundle, Trust())
    assert store.versions() == []


def _ed25519_keys(tmp_path):
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    paths = []
    for name in ("good", "other"):
        k = Ed25519PrivateKey.generate()
        priv, pub = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
        priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
        paths.append((priv, pub))
    return paths


@pytest.mark.parametrize("case, message", [
    ("hmac_ok", None),
    ("hmac_other_key", "bad signature"),
    ("hmac_card_altered", "bad signature"),
    ("unsigned", "model_card.sig: missing"),
    ("alg_mismatch", "signature alg is 'hmac-sha256', expected 'ed25519'"),
    ("ed25519_ok", None),
    ("ed25519_other_key", "bad signature"),
    ("ed25519_card_altered", "bad signature"),
])
def test_signatures(tmp_path, bundle, case, message):
    trust = Trust("hmac-sha256", hmac_key=KEY)
    if case.startswith("hmac"):
        sign_card(bundle, "hmac-sha256", hmac_key=b"another key" if case == "hmac_other_key" else KEY)
    elif case == "alg_mismatch":
        sign_card(bundle, "hmac-sha256", hmac_key=KEY)
        trust = Trust("ed25519", public_key=tmp_path / "unused.pem")
    elif case.startswith("ed25519"):
        (good_priv, good_pub), (other_priv, _) = _ed25519_keys(tmp_path)
        sign_card(bundle, "ed25519", private_key=other_priv if case == "ed25519_other_key" else good_priv)
        trust = Trust("ed25519", public_key=good_pub)
    if case.endswith("card_altered"):
        card = json.loads((bundle / "model_card.json").read_text())
        card["thresholds"]["crack"] = 0.9  # a laxer threshold slipped in after signing
        (bundle / "model_card.json").write_text(json.dumps(card))
    store = ModelStore(tmp_path / "store", "st1")
    if message is None:
        assert store.stage(bundle, trust) == ModelRef("demo", "2.0.0")
        assert store.versions()[0].signed
    else:
        with pytest.raises(BundleRefused, match=message):
            store.stage(bundle, trust)
        assert store.versions() == []


def test_the_runtime_does_not_import_cryptography(tmp_path, bundle):
    code = ("import sys; from inspector.lifecycle.store import ModelStore; from inspector.bundle.signing import "
            "Trust, sign_card\n"
            f"sign_card({str(bundle)!r}, 'hmac-sha256', hmac_key=b'k')\n"
            f"ModelStore({str(tmp_path / 's')!r}, 'st1').stage({str(bundle)!r}, Trust('hmac-sha256', hmac_key=b'k'))\n"
            "import inspector.lifecycle.manager, inspector.lifecycle.control\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


# -- pull from the remote store (S3-compatible moto server) -----------------------------------------------
@pytest.mark.parametrize("case, message", [
    ("ok", None),
    ("tampered_bin", "model_int8.bin: sha256 mismatch"),
    ("bad_signature", "bad signature"),
    ("unsigned", "model_card.sig: missing"),
    ("absent", "not found"),
])
def test_pull(tmp_path, s3_bucket, s3_env, bundle, case, message):
    remote = f"s3://{s3_bucket}/models"
    sign_card(bundle, "hmac-sha256", hmac_key=b"intruder" if case == "bad_signature" else KEY)
    if case == "unsigned":
        (bundle / "model_card.sig").unlink()
    client = s3_env.client()
    if case != "absent":
        push(bundle, remote, client=client)
    if case == "tampered_bin":  # replaced on the server after the build signed it
        _flip_byte(bundle / "model_int8.bin")
        client.upload_file(str(bundle / "model_int8.bin"), s3_bucket, "models/demo/2.0.0/model_int8.bin")
    store = ModelStore(tmp_path / "store", "st1")
    trust = Trust("hmac-sha256", hmac_key=KEY)
    ref = ModelRef("demo", "2.0.0")
    if message is None:
        assert pull(store, remote, ref, trust, client=client) == ref
        assert store.verify(ref, trust).card.version == "2.0.0"
        return
    with pytest.raises(ModelError, match=message):
        pull(store, remote, ref, trust, client=client)
    assert store.versions() == [] and not store.path(ref).exists()
    assert not [p for p in (tmp_path / "store").rglob(".staging-*")]


@pytest.mark.parametrize("creds, code", [("wrong secret", "SignatureDoesNotMatch"),
                                          ("unknown key", "InvalidAccessKeyId")])
def test_pull_cli_with_wrong_credentials_is_refused_and_stages_nothing(tmp_path, s3_bucket, s3_env, bundle,
                                                                        creds, code):
    """The server checks the SigV4 signature: the operator reads which object was refused and why."""
    sign_card(bundle, "hmac-sha256", hmac_key=KEY)
    push(bundle, f"s3://{s3_bucket}/m", client=s3_env.client())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"lifecycle: {{store: {tmp_path / 'store'}, remote: 's3://{s3_bucket}/m', "
                   f"endpoint_url: '{s3_env.endpoint_url}', signature: hmac-sha256}}\n")
    env = {**os.environ, **s3_env.env(), "INSPECTOR_LIFECYCLE__HMAC_KEY": KEY.decode()}
    if creds == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = s3_env.secret_key[::-1]
    else:
        env["AWS_ACCESS_KEY_ID"] = "AKIANOSUCHKEY0000000"
    r = subprocess.run([sys.executable, "-m", "inspector", "model", "pull", "demo@2.0.0", "--config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=120)
    # A refused pull is a ModelError (exit 2), as a bundle that fails its checks.
    assert r.returncode == 2, f"expected exit 2, got {r.returncode}: {r.stderr[-2000:]}"
    assert f"s3://{s3_bucket}/m/demo/2.0.0/model_card.json" in r.stderr and code in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    store = tmp_path / "store"
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file() and "2.0.0" in str(p)], \
        sorted(store.rglob("*"))


def test_pull_cli_refuses_with_exit_2(tmp_path, s3_bucket, s3_env, bundle):
    """The command as an operator runs it: the message names the file and the reason."""
    sign_card(bundle, "hmac-sha256", hmac_key=KEY)
    push(bundle, f"s3://{s3_bucket}/m", client=s3_env.client())
    _flip_byte(bundle / "model_int8.xml")
    s3_env.client().upload_file(str(bundle / "model_int8.xml"), s3_bucket, "m/demo/2.0.0/model_int8.xml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"lifecycle: {{store: {tmp_path / 'store'}, remote: 's3://{s3_bucket}/m', "
                   f"endpoint_url: '{s3_env.endpoint_url}', signature: hmac-sha256}}\n")
    env = {**os.environ, **s3_env.env(), "INSPECTOR_LIFECYCLE__HMAC_KEY": KEY.decode()}
    run = [sys.executable, "-m", "inspector", "model", "pull", "demo@2.0.0", "--config", str(cfg)]
    r = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "model_int8.xml: sha256 mismatch" in r.stderr
    s3_env.client().upload_file(str(make_bundle(tmp_path / "fresh", "2.0.0") / "model_int8.xml"), s3_bucket,
                                "m/demo/2.0.0/model_int8.xml")
    r = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "inspector", "model", "list", "--config", str(cfg), "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert [v["ref"] for v in json.loads(r.stdout)["versions"]] == ["demo@2.0.0"]
