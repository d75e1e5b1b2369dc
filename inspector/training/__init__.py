"""Offline model tool chain (the `train` extra): train, export, quantize, evaluate, model card.

Nothing here is imported by the line-side runtime; torch and ultralytics are imported lazily
inside the functions that need them, after `offline.prepare()` has cut them off the network.
"""
