"""The generator: deterministic, vectorized, and true to its configured fractions."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest

from bench.scenario import from_preset
from datagen.model import EventModel, _Hasher, arrival_batch, lateness_days


def model(**kw: Any) -> EventModel:
    return dataclasses.replace(from_preset("small", events_per_day=50_000).event_model(), **kw)


def test_same_seed_same_batches() -> None:
    m = model()
    for day in (0, 3, 17):
        assert arrival_batch(m, day).equals(arrival_batch(m, day))


def test_other_seed_other_batches() -> None:
    assert not arrival_batch(model(seed=1), 2).equals(arrival_batch(model(seed=2), 2))


def test_measured_fractions_match_configuration() -> None:
    m = model(late_fraction=0.05, beyond_window_share=0.2, duplicate_fraction=0.01, malformed_fraction=0.004)
    b = arrival_batch(m, 30)
    originals = b.slice(0, m.events_per_day)
    event_dates = pc.cast(originals.column("event_ts"), "date32").to_numpy()
    arrival = np.datetime64(date(2026, 1, 31))
    lateness = (arrival - event_dates.astype("datetime64[D]")).astype(int)
    late = lateness >= 1
    assert late.mean() == pytest.approx(0.05, abs=0.005)
    assert (lateness[late] >= m.lateness_window_days).mean() == pytest.approx(0.2, abs=0.03)
    assert lateness.max() <= m.max_lateness_days
    dups = b.num_rows - m.events_per_day
    assert dups == round(m.events_per_day * 0.01)
    bad = pc.or_(
        originals.column("title_id").is_null(),
        pc.or_kleene(originals.column("view_seconds").is_null(), pc.less_equal(originals.column("view_seconds"), 0)),
    )
    assert pc.sum(bad).as_py() / m.events_per_day == pytest.approx(0.004, abs=0.0015)


@pytest.mark.slow
def test_duplicates_repeat_an_earlier_payload_exactly() -> None:
    m = model(duplicate_fraction=0.02)
    day = 9
    b = arrival_batch(m, day)
    dups = b.slice(m.events_per_day)
    earlier = {}
    for d in range(day):
        t = arrival_batch(m, d).slice(0, m.events_per_day)
        for row in t.to_pylist():
            earlier[row["event_id"]] = row
    for row in dups.to_pylist():
        original = earlier[row["event_id"]]
        assert {k: v for k, v in row.items() if k != "ingest_ts"} == {
            k: v for k, v in original.items() if k != "ingest_ts"
        }
        assert row["ingest_ts"].date() == date(2026, 1, 1 + day)
        assert row["ingest_ts"] > original["ingest_ts"]


def test_every_event_arrives_on_its_batch_date_after_it_happened() -> None:
    m = model()
    b = arrival_batch(m, 5)
    ingest_dates = set(pc.cast(b.column("ingest_ts"), "date32").to_pylist())
    assert ingest_dates == {date(2026, 1, 6)}
    assert pc.all(pc.less_equal(b.column("event_ts"), b.column("ingest_ts"))).as_py()


def test_no_beyond_window_lateness_when_share_is_zero() -> None:
    m = model(beyond_window_share=0.0, late_fraction=0.5)
    n = np.arange(200_000, dtype=np.uint64)
    lat = lateness_days(m, _Hasher(m.seed), n)
    assert lat.max() == m.lateness_window_days - 1
    assert (lat > 0).mean() == pytest.approx(0.5, abs=0.01)
