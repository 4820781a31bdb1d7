"""Sinks (owned by the transcoder work; placeholder so the package imports)."""
