"""Harness layer: the pytest plugin (fixtures, markers, lanes, runtime discipline)."""
