"""Deterministic generation and ingest of late-arriving playback events."""
