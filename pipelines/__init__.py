"""Catalog, business logic, strategies (lookback, IPS), oracle and engines."""
