"""Rendering result files into report.md and PNG plots (never re-runs pipelines)."""
