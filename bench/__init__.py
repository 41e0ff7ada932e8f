"""Scenarios, the day-by-day runner, metrics, equality checks, results and CLI."""
