"""Counts the sha256s computed of model files: a counter around the two hash functions every reader
goes through (`inspector.bundle.card.sha256_bytes` / `sha256_file`), keyed by the digest so a count
names the file it hashed."""

from __future__ import annotations

from collections import Counter


class HashCounter:
    def __init__(self, monkeypatch) -> None:
        import inspector.bundle.card as card
        import inspector.lifecycle.store as store

        self.digests: Counter[str] = Counter()
        real_bytes, real_file = card.sha256_bytes, card.sha256_file

        def on_bytes(data: bytes) -> str:
            return self._note(real_bytes(data))

        def on_file(path) -> str:
            return self._note(real_file(path))

        monkeypatch.setattr(card, "sha256_bytes", on_bytes)
        monkeypatch.setattr(card, "sha256_file", on_file)
        monkeypatch.setattr(store, "sha256_file", on_file)  # its identical-version check imports it by name

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
