"""The kernel: what every layer above may use and which imports nothing of the product above it.

Alarms (kinds, clears, the throttle), thread priority and real-time scheduling, atomic files and fsync,
the bounded HTTP server. Together with the top-level `errors`, `config`, `frames`, `records` and `stats`
modules it is the bottom layer; docs/architecture.md gives the layer order and tests/test_layers.py
enforces it.
"""
