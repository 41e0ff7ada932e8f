"""DESIGN.md's input contract on a user's events file: every file is read exactly or refused in one line."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from datagen.ingest import (
    DEFAULT_MAX_DAYS,
    UTC_ZONES,
    BadEventsFile,
    EventsFile,
    arrival_dates,
    read_events_file,
    split_by_arrival,
)
from datagen.model import SOURCE_ARROW_SCHEMA
from tests.events import Event, at, batch

US_PER_DAY = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START_US = (datetime(2026, 3, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def write(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def refusal(path: Path, **kw: Any) -> str:
    with pytest.raises(BadEventsFile) as e:
        read_events_file(path, **kw)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_copies_on_two_event_dates_are_refused_naming_one(tmp_path: Path) -> None:
    original = Event("e7", 1, 10, "US", "tv", at(0, 23), 60, at(0, 23))
    shifted = Event("e7", 1, 10, "US", "tv", at(1, 1), 60, at(2, 5))
    other = Event("e8", 2, 10, "US", "tv", at(0, 5), 60, at(0, 6))
    message = refusal(write(tmp_path / "e.parquet", batch([other, original, shifted])))
    assert "'e7'" in message and "2026-03-01" in message and "2026-03-02" in message


def test_copies_at_other_times_of_one_date_and_future_dates_are_kept(tmp_path: Path) -> None:
    events = [
        Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2)),
        # Re-sent with the time moved within the same date, and a different payload at the same instant.
        Event("a", 1, 10, "US", "tv", at(0, 20), 60, at(1, 3)),
        Event("a", 1, 10, "FR", "tv", at(0, 20), 60, at(1, 3)),
        # A device clock ahead: dated two days after it arrives, and in 2099.
        Event("b", 2, 11, "US", "tv", at(3, 0), 60, at(1, 4)),
        Event("c", 3, 12, "US", "tv", datetime(2099, 1, 1, tzinfo=UTC), 60, at(1, 5)),
    ]
    got = read_events_file(write(tmp_path / "e.parquet", batch(events)))
    assert got.equals(batch(events))


def test_a_non_utc_time_zone_is_refused(tmp_path: Path) -> None:
    table = batch([Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2))])
    paris = table.set_column(5, "event_ts", table.column("event_ts").cast(pa.timestamp("us", tz="Europe/Paris")))
    message = refusal(write(tmp_path / "e.parquet", paris))
    assert "'event_ts'" in message and "Europe/Paris" in message


def test_naive_and_utc_alias_timestamps_are_read_as_utc(tmp_path: Path) -> None:
    table = batch([Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2))])
    naive = table.set_column(5, "event_ts", table.column("event_ts").cast(pa.timestamp("us")))
    alias = naive.set_column(7, "ingest_ts", table.column("ingest_ts").cast(pa.timestamp("ms", tz="Etc/UTC")))
    assert read_events_file(write(tmp_path / "e.parquet", alias)).equals(table)


def test_a_null_in_a_required_column_is_refused(tmp_path: Path) -> None:
    table = batch([Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2))])
    no_country = table.set_column(3, pa.field("country", pa.string()), pa.array([None], pa.string()))
    assert "'country'" in refusal(write(tmp_path / "e.parquet", no_country))


def test_an_arrival_span_over_the_limit_is_refused_unless_allowed(tmp_path: Path) -> None:
    events = [Event(f"e{i}", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2)) for i in range(5)]
    # Three rows whose ingest_ts is 0: a 20,000-day run if taken at face value.
    epoch = [Event(f"z{i}", 1, 10, "US", "tv", EPOCH, 60, EPOCH) for i in range(3)]
    path = write(tmp_path / "e.parquet", batch(events + epoch))
    span = (date(2026, 3, 1) - date(1970, 1, 1)).days + 1
    message = refusal(path)
    assert f"{span:,} arrival dates" in message and f"limit of {DEFAULT_MAX_DAYS}" in message
    assert read_events_file(path, max_days=span).num_rows == 8
    assert "3 arrival dates" in refusal(
        write(tmp_path / "f.parquet", batch([*events, events[0].resent(2)])), max_days=2
    )


def test_timestamps_that_lose_precision_are_refused(tmp_path: Path) -> None:
    table = batch([Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2))])
    ns = pa.array([(START_US + 3_600_000_000) * 1000 + 1], pa.timestamp("ns", tz="UTC"))
    assert "'event_ts'" in refusal(write(tmp_path / "e.parquet", table.set_column(5, "event_ts", ns)))


def test_events_file_splits_once_and_describes_itself(tmp_path: Path) -> None:
    events = [
        Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(0, 2)),
        Event("b", 1, 10, "US", "tv", at(0, 3), 60, at(2, 2)),  # two days late
        Event("a", 1, 10, "US", "tv", at(0, 1), 60, at(2, 3)),  # a re-send, two days late
        Event("c", 1, 10, "US", "tv", at(4, 3), 60, at(2, 4)),  # dated two days ahead of arrival
    ]
    path = write(tmp_path / "e.parquet", batch(events))
    f = EventsFile.read(path)
    assert f.first_arrival == date(2026, 3, 1) and f.last_arrival == date(2026, 3, 3) and f.days == 3
    assert [b.num_rows for b in f.batches] == [1, 0, 3]
    assert (f.first_arrival, list(f.batches)) == split_by_arrival(f.table)
    assert f.describe() == {
        "file": str(path),
        "rows": 4,
        "event_ids": 3,
        "first_arrival": "2026-03-01",
        "last_arrival": "2026-03-03",
        "arrival_days": 3,
        "first_event_date": "2026-03-01",
        "last_event_date": "2026-03-05",
        "late_share": 0.5,
        "ahead_share": 0.25,
    }


def test_split_by_arrival_keeps_file_order_within_a_date() -> None:
    events = [Event(f"e{i}", 1, 10, "US", "tv", at(0, 1), 60, at(i % 3, i)) for i in range(12)]
    table = batch(events)
    first, batches = split_by_arrival(table)
    days = arrival_dates(table)
    for i, b in enumerate(batches):
        want = table.filter(pc.equal(days, pa.scalar(first + timedelta(days=i), pa.date32())))
        assert b.equals(want)


# -- exact or refused, over messy files -------------------------------------------

REQUIRED = [f.name for f in SOURCE_ARROW_SCHEMA if not f.nullable]
UTC_ALIASES = [None, "UTC", "Etc/UTC", "+00:00"]
OTHER_ZONES = ["Europe/Paris", "America/New_York"]
UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}


@dataclass(frozen=True)
class MessyFile:
    rows: list[dict[str, Any]]  # timestamps as microseconds since the epoch (UTC)
    zones: tuple[str | None, str | None]  # of event_ts and ingest_ts
    unit: str
    sub_us_ns: int  # added to one event_ts when the unit is ns: not representable in microseconds
    max_days: int

    def table(self) -> pa.Table:
        columns: dict[str, pa.Array] = {}
        for f in SOURCE_ARROW_SCHEMA:
            values = [r[f.name] for r in self.rows]
            if pa.types.is_timestamp(f.type):
                zone = self.zones[0] if f.name == "event_ts" else self.zones[1]
                scale = 1000 if self.unit == "ns" else 1
                stored = [None if v is None else v * scale // UNITS[self.unit] for v in values]
                first = stored[0]
                if f.name == "event_ts" and first is not None:
                    stored[0] = first + self.sub_us_ns
                columns[f.name] = pa.array(stored, pa.timestamp(self.unit, tz=zone))
            else:
                columns[f.name] = pa.array(values, f.type)
        return pa.table(columns)

    def breaches(self) -> list[str]:
        """The contract's breaches, judged from the Python values (independently of the reader)."""
        found = []
        if any(z is not None and z not in UTC_ZONES for z in self.zones):
            found.append("zone")
        if any(r[name] is None for r in self.rows for name in REQUIRED):
            found.append("null")
        if self.sub_us_ns and self.rows[0]["event_ts"] is not None:
            found.append("precision")
        if any(r["event_ts"] is None or r["ingest_ts"] is None for r in self.rows):
            return found
        arrivals = [r["ingest_ts"] // US_PER_DAY for r in self.rows]
        if max(arrivals) - min(arrivals) + 1 > self.max_days:
            found.append("span")
        if self.split_events():
            found.append("dates")
        return found

    def split_events(self) -> dict[str, set[date]]:
        dates: dict[str, set[date]] = {}
        for r in self.rows:
            dates.setdefault(r["event_id"], set()).add(date(1970, 1, 1) + timedelta(days=r["event_ts"] // US_PER_DAY))
        return {k: v for k, v in dates.items() if len(v) > 1}

    def expected_rows(self) -> Counter[tuple[Any, ...]]:
        """The input rows with timestamps as the reader returns them (UTC, microseconds)."""
        unit = UNITS[self.unit]
        return Counter(
            tuple(
                EPOCH + timedelta(microseconds=r[n] // unit * unit) if n in ("event_ts", "ingest_ts") else r[n]
                for n in SOURCE_ARROW_SCHEMA.names
            )
            for r in self.rows
        )


@st.composite
def messy_files(draw: st.DrawFn) -> MessyFile:
    """Events with shifted copies, future dates, same-instant copies with other payloads, mixed zones."""
    rows: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 5))):
        arrival = draw(st.integers(0, 5)) * US_PER_DAY + draw(st.integers(0, US_PER_DAY - 1))
        lateness_us = draw(st.integers(-2 * US_PER_DAY, 3 * US_PER_DAY))  # below 0: a device clock ahead
        base: dict[str, Any] = {
            "event_id": f"e{i}",
            "account_id": draw(st.integers(1, 3)),
            "title_id": draw(st.none() | st.integers(1, 3)),
            "country": draw(st.sampled_from(["US", "FR"])),
            "device": "tv",
            "event_ts": START_US + arrival - lateness_us,
            "view_seconds": draw(st.none() | st.integers(-5, 100)),
            "ingest_ts": START_US + arrival,
        }
        rows.append(base)
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["resent", "shifted", "same_instant_other_payload"]))
            copy = dict(base, ingest_ts=base["ingest_ts"] + draw(st.integers(0, 2 * US_PER_DAY)))
            if kind == "shifted":
                # Another time of the event's date (valid), or a day or more away (refused).
                day = base["event_ts"] // US_PER_DAY + draw(st.sampled_from([0, 0, 0, 0, -1, 2]))
                copy["event_ts"] = day * US_PER_DAY + draw(st.integers(0, US_PER_DAY - 1))
            elif kind == "same_instant_other_payload":
                copy = dict(base, country=draw(st.sampled_from(["US", "FR", "DE"])), account_id=9)
            rows.append(copy)
    if draw(st.integers(0, 9)) == 0:
        rows[draw(st.integers(0, len(rows) - 1))][draw(st.sampled_from(REQUIRED))] = None
    unit = draw(st.sampled_from(list(UNITS)))
    zones = (draw(st.sampled_from(UTC_ALIASES)), draw(st.sampled_from(UTC_ALIASES)))
    if draw(st.integers(0, 7)) == 0:
        zones = (draw(st.sampled_from(OTHER_ZONES)), zones[1])
    return MessyFile(
        rows=draw(st.permutations(rows)),
        zones=zones,
        unit=unit,
        sub_us_ns=draw(st.sampled_from([0, 0, 0, 1, 999])) if unit == "ns" else 0,
        max_days=draw(st.sampled_from([2, 8, DEFAULT_MAX_DAYS, DEFAULT_MAX_DAYS])),
    )


PROPERTY_EXAMPLES = 300


@settings(max_examples=PROPERTY_EXAMPLES)
@given(messy_files())
def test_a_messy_file_is_read_exactly_or_refused(messy: MessyFile) -> None:
    breaches = messy.breaches()
    # Shown by --hypothesis-show-statistics: how often each outcome is exercised.
    event("refused: " + " ".join(breaches) if breaches else "accepted")
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / "events.parquet", messy.table())
        try:
            got = read_events_file(path, max_days=messy.max_days)
        except BadEventsFile as e:
            message = str(e)
            assert breaches, f"refused a valid file: {message}"
            assert "\n" not in message
            if breaches == ["dates"]:
                named = next(k for k in messy.split_events() if repr(k) in message)
                first, last = min(messy.split_events()[named]), max(messy.split_events()[named])
                assert f"dated {first} and {last}" in message
            return
    assert not breaches, f"accepted a file that breaks the contract: {breaches}"
    assert got.schema == SOURCE_ARROW_SCHEMA
    assert Counter(tuple(r.values()) for r in got.to_pylist()) == messy.expected_rows()
    split = EventsFile.of(got)
    assert sum(b.num_rows for b in split.batches) == got.num_rows
    for i, b in enumerate(split.batches):
        assert set(arrival_dates(b).to_pylist()) <= {split.first_arrival + timedelta(days=i)}
