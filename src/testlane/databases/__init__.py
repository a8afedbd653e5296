"""Databases layer: migrations, templates, snapshots, the clone pool, isolation modes, the guard."""
