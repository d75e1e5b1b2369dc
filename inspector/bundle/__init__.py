"""A model bundle on disk: its card's one typed schema (`card`) and the one check every bundle passes
before it is written, staged, pulled, promoted, shadowed or started on (`verify`)."""
