"""Freshness: how long after an event arrives each table first reflects it, from a schedule alone.

Simulated time is seconds since midnight (UTC) of processing day 0. Arrival
batch ``b`` holds the events whose arrival falls in ``[b * L, (b + 1) * L)``
(``L`` the batch length) and closes at ``(b + 1) * L``. A strategy's runs are
sequential: a run starts when its batch closes, or when the previous run ends
if that is later, and takes the wall time it measured; a stage commits at the
run's start plus the measured time of the stages up to and including it.

An event's freshness in a table is the commit time of the first run whose
output includes it, minus its arrival. IPS's first run after the event's
batch includes it (it captures whatever arrived since its last commit). The
lookback's run on processing day ``P`` includes the event dates
``[P - (X - 1), P]``: the first run after the event's batch whose window holds
the event's date includes it; an event whose date has left the window by then
is never included ("never").

Arithmetic on arrays, no catalog; DuckDB only aggregates the arrivals by event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from datagen.model import US_PER_DAY

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Run:
    """One run of a strategy: every stage, in stage order, after one batch closed.

    Attributes:
        batch: global index of the arrival batch whose close starts it.
        day: its processing day (the lookback's window ends on that date).
        stages: (stage, measured wall seconds) in the order the stages ran.
    """

    batch: int
    day: int
    stages: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Arrivals:
    """Events as freshness needs them: one entry per event (its first arrival).

    Attributes:
        arrival_s: arrival time, seconds since midnight of processing day 0.
        event_day: the event's date, in days since processing day 0.
    """

    arrival_s: np.ndarray
    event_day: np.ndarray

    @property
    def late(self) -> np.ndarray:
        """Events that arrived on a later date than their own (one day late or more)."""
        return np.floor_divide(self.arrival_s, SECONDS_PER_DAY).astype(np.int64) > self.event_day


def commit_times(runs: Sequence[Run], batch_seconds: float) -> np.ndarray:
    """Each run's stage commit times, shape (runs, stages), in seconds since midnight of day 0."""
    out = np.zeros((len(runs), len(runs[0].stages) if runs else 0))
    previous_end = -np.inf
    for i, run in enumerate(runs):
        start = max((run.batch + 1) * batch_seconds, previous_end)
        out[i] = start + np.cumsum([wall for _, wall in run.stages])
        previous_end = out[i, -1] if run.stages else start
    return out


def first_runs(runs: Sequence[Run], batch_seconds: float, events: Arrivals, window_days: int | None) -> np.ndarray:
    """Index of the first run that includes each event, -1 for never.

    Args:
        window_days: the lookback's window X, or None for a strategy that
            includes whatever arrived before its run (IPS).
    """
    batches = np.array([r.batch for r in runs], dtype=np.int64)
    if np.any(np.diff(batches) <= 0):
        raise ValueError("runs must follow one another, one per batch at most")
    event_batch = np.floor_divide(events.arrival_s, batch_seconds).astype(np.int64)
    first = np.searchsorted(batches, event_batch, side="left")
    if window_days is not None:
        days = np.array([r.day for r in runs], dtype=np.int64)
        # The window must also have reached the event's date (an event dated ahead of its arrival waits).
        first = np.maximum(first, np.searchsorted(days, events.event_day, side="left"))
        inside = np.zeros(len(first), dtype=bool)
        known = first < len(runs)
        inside[known] = days[first[known]] - (window_days - 1) <= events.event_day[known]
        return np.where(inside, first, -1)
    return np.where(first < len(runs), first, -1)


def delays(runs: Sequence[Run], batch_seconds: float, events: Arrivals, window_days: int | None) -> np.ndarray:
    """Freshness of each event in each stage's table, shape (events, stages); NaN for never."""
    if not runs:
        return np.full((len(events.arrival_s), 0), np.nan)
    commits = commit_times(runs, batch_seconds)
    first = first_runs(runs, batch_seconds, events, window_days)
    out = np.full((len(first), commits.shape[1]), np.nan)
    seen = first >= 0
    out[seen] = commits[first[seen]] - events.arrival_s[seen, None]
    return out


def stats(values: np.ndarray) -> dict[str, Any]:
    """Events, how many are never included, and p50/p95/max seconds of the others (None when none are)."""
    seen = values[~np.isnan(values)]
    figures: dict[str, Any] = {"events": len(values), "never": len(values) - len(seen)}
    for name, q in (("p50_s", 50), ("p95_s", 95), ("max_s", 100)):
        figures[name] = float(np.percentile(seen, q)) if len(seen) else None
    return figures


def table_freshness(values: np.ndarray, late: np.ndarray) -> dict[str, dict[str, Any]]:
    """One table's freshness figures: every event, on-time events and late events apart."""
    return {"all": stats(values), "on_time": stats(values[~late]), "late": stats(values[late])}


def strategy_freshness(
    runs: Sequence[Run],
    batch_seconds: float,
    events_by_source: dict[str, Arrivals],
    sources_of: dict[str, tuple[str, ...]],
    window_days: int | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per stage table: the freshness of the events of every source that reaches it.

    Args:
        events_by_source: each source table's events.
        sources_of: per stage, the source tables whose events reach it.
    """
    if not runs:
        return {}
    stages = [name for name, _ in runs[0].stages]
    per_source = {s: delays(runs, batch_seconds, e, window_days) for s, e in events_by_source.items()}
    out = {}
    for i, stage in enumerate(stages):
        feeding = [s for s in sources_of.get(stage, ()) if s in per_source]
        values = np.concatenate([per_source[s][:, i] for s in feeding]) if feeding else np.empty(0)
        late = np.concatenate([events_by_source[s].late for s in feeding]) if feeding else np.empty(0, dtype=bool)
        out[stage] = table_freshness(values, late)
    return out


def first_arrivals_in(db: duckdb.DuckDBPyConnection, relation: str, start_date: date, from_day: int = 0) -> Arrivals:
    """Each event's first arrival, from ``relation`` in ``db``: rows with ``event_id``, ``event_ts``
    and ``ingest_ts`` (UTC), re-sends included. DuckDB aggregates (and spills) by event.

    Args:
        start_date: processing day 0 (simulated time 0 is its midnight, UTC).
        from_day: leave out events first arriving before this processing day (a warm-up).
    """
    midnight_us = (start_date - date(1970, 1, 1)).days * US_PER_DAY
    first = db.sql(
        f"SELECT epoch_us(MIN(ingest_ts)) - {midnight_us} AS arrival_us, "
        # Copies of an event share the UTC date of event_ts (the input contract).
        f"epoch_us(MIN(event_ts)) - {midnight_us} AS event_us FROM {relation} GROUP BY event_id "
        f"HAVING epoch_us(MIN(ingest_ts)) - {midnight_us} >= {from_day * US_PER_DAY}"
    ).fetchnumpy()
    arrival_us, event_us = (np.asarray(first[c], dtype=np.int64) for c in ("arrival_us", "event_us"))
    return Arrivals(arrival_us / 1e6, np.floor_divide(event_us, US_PER_DAY))


def first_arrivals(rows: pa.Table, start_date: date, from_day: int = 0) -> Arrivals:
    """``first_arrivals_in`` over an Arrow table."""
    with duckdb.connect() as db:
        db.register("arrival_rows", rows)
        return first_arrivals_in(db, "arrival_rows", start_date, from_day)
