"""Helpers shared by the command modules."""

from __future__ import annotations


def load_config_arg(path: str | None):
    from inspector.config import load_config

    return load_config(path)
