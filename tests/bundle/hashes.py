"""Counts the sha256s computed of model files: a counter around the two hash functions every bundle check
goes through (`inspector.bundle.hashing.sha256_bytes` / `sha256_file`, called through the module), keyed
by the digest so a count names the file it hashed."""

from __future__ import annotations

from collections import Counter


class HashCounter:
    def __init__(self, monkeypatch) -> None:
        from inspector.bundle import hashing

        self.digests: Counter[str] = Counter()
        real_bytes, real_file = hashing.sha256_bytes, hashing.sha256_file

        def on_bytes(data: bytes) -> str:
            return self._note(real_bytes(data))

        def on_file(path) -> str:
            return self._note(real_file(path))

        monkeypatch.setattr(hashing, "sha256_bytes", on_bytes)
        monkeypatch.setattr(hashing, "sha256_file", on_file)

    def _note(self, digest: str) -> str:
        self.digests[digest] += 1
        return digest

    def per_file(self, card: dict) -> dict[str, int]:
        """{file name: times hashed} for every model file the card names."""
        out = {}
        for entry in card["files"].values():
            for kind in ("xml", "bin"):
                out[entry[kind]] = self.digests[entry[f"{kind}_sha256"]]
        return out

    def clear(self) -> None:
        self.digests.clear()
