"""The exception tree. Every error says what was expected and what was found.

    InspectorError
     ├── ConfigError      bad config file, field or override         (exit 2)
     ├── ModelError       missing/corrupt model, metadata mismatch,   (exit 2)
     │                    unavailable device
     ├── SourceError      camera/stream/file cannot be opened or read (exit 1)
     ├── PublishError     broker refused us (auth, TLS), outbox full  (exit 1)
     └── SpoolError       spool dir unusable, disk full, upload failed (exit 1)
"""

from __future__ import annotations


class InspectorError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(InspectorError):
    exit_code = 2


class ModelError(InspectorError):
    exit_code = 2


class SourceError(InspectorError):
    pass


class PublishError(InspectorError):
    pass


class SpoolError(InspectorError):
    pass
