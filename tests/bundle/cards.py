"""Typed model cards for tests: models/demo's card with some fields changed, checked by the one schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspector.bundle.card import ModelCard, parse_card

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def demo_card() -> dict[str, Any]:
    """models/demo's card as JSON."""
    return json.loads((DEMO / "model_card.json").read_text())


def card_with(**fields: Any) -> ModelCard:
    """models/demo's card with these top-level fields replaced (None removes one), parsed."""
    raw = demo_card()
    for k, v in fields.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return parse_card(raw, "test card")[0]
