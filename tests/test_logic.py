"""The stage SQL (``pipelines/logic.py``) against an independent pandas reading of DESIGN.md.

The oracle runs the same SQL as both strategies, so it cannot catch a mistake
in the SQL itself; this test can. Small domains force duplicates, ties in
arrival time, malformed rows, view times above the cap and more than ten
titles per country and day.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from datagen.model import SOURCE_ARROW_SCHEMA
from pipelines import logic
from pipelines.engine import DuckDBEngine
from pipelines.pipeline import stage
from tests.events import impressions_of

T0 = datetime(2026, 3, 1, tzinfo=UTC)

payloads = st.fixed_dictionaries(
    {
        "account_id": st.integers(1, 6),
        "title_id": st.one_of(st.none(), st.integers(1, 14)),
        "country": st.sampled_from(["US", "BR"]),
        "device": st.sampled_from(["tv", "web"]),
        # Any minute of two days: dates split at UTC midnight.
        "event_ts": st.integers(0, 2 * 24 * 60 - 1).map(lambda m: T0 + timedelta(minutes=m)),
        "view_seconds": st.one_of(st.none(), st.integers(-5, 20_000)),
    }
)


# What a copy of an event may carry differently from the first (a re-send from
# another device or region); its event date stays the same (the input contract).
variations = st.fixed_dictionaries(
    {},
    optional={
        "account_id": st.integers(1, 6),
        "country": st.sampled_from(["US", "BR"]),
        "device": st.sampled_from(["tv", "web"]),
        "view_seconds": st.one_of(st.none(), st.integers(-5, 20_000)),
    },
)


@st.composite
def event_tables(draw) -> pa.Table:
    """Events with ids e0..eN; copies arrive later or at the same instant, some with another payload."""
    rows = []
    for i, payload in enumerate(draw(st.lists(payloads, min_size=1, max_size=100))):
        for hours in draw(st.lists(st.integers(0, 96), min_size=1, max_size=3)):  # equal arrivals allowed
            copy = {**payload, **draw(variations)}
            rows.append({"event_id": f"e{i}", **copy, "ingest_ts": payload["event_ts"] + timedelta(hours=hours)})
    order = draw(st.permutations(range(len(rows))))
    return pa.Table.from_pylist([rows[i] for i in order], schema=SOURCE_ARROW_SCHEMA)


def event_key(event_id: str) -> int:
    """The first 60 bits of the id's MD5, as DESIGN.md's narrow probe key."""
    return int(hashlib.md5(event_id.encode()).hexdigest()[:15], 16)


def reference(events: pd.DataFrame, impressions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The stages as DESIGN.md states them, in pandas."""
    valid = events[events.title_id.notna() & (events.view_seconds.fillna(0) > 0)]
    # The earliest copy; among copies that arrived together the smallest by country, device, account, title, time.
    order = ["ingest_ts", "country", "device", "account_id", "title_id", "view_seconds"]
    daily = valid.sort_values(order, kind="stable").drop_duplicates("event_id", keep="first").copy()
    daily["event_key"] = [event_key(i) for i in daily.event_id]
    daily["event_date"] = daily.event_ts.dt.tz_convert("UTC").dt.date
    daily["view_seconds"] = daily.view_seconds.clip(upper=logic.VIEW_SECONDS_CAP)
    daily = daily.drop(columns="ingest_ts")
    agg = (
        daily.groupby(["event_date", "account_id"])
        .agg(
            total_view_seconds=("view_seconds", "sum"),
            plays=("event_id", "size"),
            distinct_titles=("title_id", "nunique"),
        )
        .reset_index()
    )
    per_title = (
        daily.groupby(["event_date", "country", "title_id"])
        .agg(view_seconds=("view_seconds", "sum"), viewers=("account_id", "nunique"))
        .reset_index()
        .sort_values(["event_date", "country", "view_seconds", "title_id"], ascending=[True, True, False, True])
    )
    per_title["title_rank"] = per_title.groupby(["event_date", "country"]).cumcount() + 1
    rank = per_title[per_title.title_rank <= logic.TOP_TITLES]
    cumulative = (
        daily.groupby(["event_date", "account_id"])
        .agg(day_view_seconds=("view_seconds", "sum"))
        .reset_index()
        .sort_values(["account_id", "event_date"])
    )
    cumulative["cumulative_view_seconds"] = cumulative.groupby("account_id").day_view_seconds.cumsum()
    impressions = impressions.assign(event_date=impressions.event_ts.dt.tz_convert("UTC").dt.date)
    shown = impressions.groupby(["event_date", "title_id"]).agg(impressions=("event_id", "nunique"))
    played = daily.groupby(["event_date", "title_id"]).agg(plays=("event_id", "size"))
    take_rate = shown.join(played, how="outer").fillna(0).reset_index()
    return {
        "playback_daily": daily,
        "playback_daily_agg": agg,
        "title_daily_rank": rank,
        "title_take_rate": take_rate,
        "account_cumulative": cumulative,
    }


def normalized(df: pd.DataFrame, columns: list[str]) -> list[tuple]:
    out = df[columns].copy()
    for c in columns:
        if c == "event_date":
            out[c] = pd.to_datetime(out[c]).dt.date
        elif c == "event_ts":
            out[c] = pd.to_datetime(out[c], utc=True)
        elif out[c].dtype.kind in "iuf":
            out[c] = out[c].astype("int64")
    return sorted(out.itertuples(index=False, name=None))


CARRY_SCHEMA = pa.schema([("account_id", pa.int64()), ("cumulative_view_seconds", pa.int64())])


def assert_sql_matches_reference(events: pa.Table) -> None:
    engine = DuckDBEngine(threads=1)
    try:
        engine.bind_arrow("events", events)
        daily = engine.query(stage("playback_daily").statement())
        engine.bind_arrow("daily", daily)
        engine.bind_arrow("impressions", impressions_of(events))
        cumulative = stage("account_cumulative")
        engine.bind_arrow("base", CARRY_SCHEMA.empty_table())  # every date at once: nothing carried in
        ours = {
            "playback_daily": daily,
            "playback_daily_agg": engine.query(stage("playback_daily_agg").statement()),
            "title_daily_rank": engine.query(stage("title_daily_rank").statement()),
            "title_take_rate": engine.query(stage("title_take_rate").statement()),
            "account_cumulative": engine.query(cumulative.statement()),
        }
        # The same rows when the later dates are computed on their own, carrying
        # each account's total in from the earlier dates' rows (as lookback and IPS do).
        cut = min(daily.column("event_date").to_pylist(), default=None)
        if cut is not None:
            assert cumulative.carry is not None
            engine.bind_arrow("before", ours["account_cumulative"].filter(pc.less_equal(pc.field("event_date"), cut)))
            engine.bind_sql("base", cumulative.carry.sql.format(before="before"))
            engine.bind_arrow("daily", daily.filter(pc.greater(pc.field("event_date"), cut)))
            later = engine.query(cumulative.statement())
            whole = ours["account_cumulative"].filter(pc.greater(pc.field("event_date"), cut))
            columns = whole.column_names
            assert normalized(later.to_pandas(), columns) == normalized(whole.to_pandas(), columns)
    finally:
        engine.close()
    expected = reference(events.to_pandas(), impressions_of(events).to_pandas())
    for name, table in ours.items():
        columns = table.column_names
        assert normalized(table.to_pandas(), columns) == normalized(expected[name], columns), name


@given(event_tables())
def test_stage_sql_matches_an_independent_reading_of_the_design(events: pa.Table) -> None:
    assert_sql_matches_reference(events)


def test_stage_sql_on_a_day_with_every_case() -> None:
    """One date and country with 14 titles (4 cut by the top 10, ties in view time broken by
    title), an account watching a title twice, a copy arriving at the same instant as its
    original, a view time above the cap and malformed rows."""
    ts = T0 + timedelta(hours=5)
    rows = [
        {
            "event_id": f"e{t}",
            "account_id": 1 + t % 3,
            "title_id": t,
            "country": "US",
            "device": "tv",
            "event_ts": ts,
            "view_seconds": 100 * (t % 5) + 1,
            "ingest_ts": ts,
        }
        for t in range(1, 15)
    ]
    rows += [
        {**rows[0], "event_id": "e-again", "device": "web"},  # account 2 watches title 1 again, on the web
        {**rows[1], "ingest_ts": ts},  # a copy arriving with its original
        {**rows[1], "country": "BR"},  # one more at that instant from BR: "BR" < "US", this copy is kept
        {**rows[2], "ingest_ts": ts + timedelta(days=2)},  # a late copy
        {**rows[3], "event_id": "e-long", "view_seconds": 50_000},
        {**rows[4], "event_id": "e-no-title", "title_id": None},
        {**rows[5], "event_id": "e-zero", "view_seconds": 0},
    ]
    events = pa.Table.from_pylist(rows, schema=SOURCE_ARROW_SCHEMA)
    expected = reference(events.to_pandas(), impressions_of(events).to_pandas())
    assert len(expected["playback_daily"]) == 16  # 14 + e-again + e-long
    assert expected["title_daily_rank"].title_rank.max() == logic.TOP_TITLES
    assert expected["playback_daily"].view_seconds.max() == logic.VIEW_SECONDS_CAP
    assert expected["playback_daily"].set_index("event_id").loc["e2", "country"] == "BR"
    assert_sql_matches_reference(events)
