"""Vectorized, seeded model of playback events and their arrival.

Every attribute of an event is a pure function of ``(seed, event_number)``
computed with a counter-based hash (splitmix64), so any arrival batch can be
generated on its own, in any order, and a duplicate re-sent days later carries
exactly the payload of its original without keeping old batches in memory.

Event ``n`` is originally sent in arrival batch ``n // events_per_day``. Its
lateness (arrival date minus event date, in days) is 0 for most events; a
``late_fraction`` of them are late, with a long tail: a ``beyond_window_share``
of the late ones arrive ``lateness_window_days`` or more days late (up to
``max_lateness_days``), which a lookback of that window never sees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

US_PER_DAY = 86_400_000_000
# Minutes in an arrival day: an arrival batch's length must divide it.
MINUTES_PER_DAY = 1_440
VIEW_SECONDS_CAP = 14_400

COUNTRIES = pa.array(
    [
        "US",
        "BR",
        "GB",
        "DE",
        "FR",
        "MX",
        "CA",
        "IN",
        "JP",
        "KR",
        "ES",
        "IT",
        "AU",
        "NL",
        "PL",
        "AR",
        "CO",
        "SE",
        "TR",
        "ZA",
    ]
)
COUNTRY_WEIGHTS = np.array([30, 10, 7, 6, 6, 5, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 2, 1, 1], dtype=np.float64)
DEVICES = pa.array(["tv", "mobile", "web", "tablet", "console"])
DEVICE_WEIGHTS = np.array([45, 30, 12, 8, 5], dtype=np.float64)

# Separate hash streams so that columns are independent of each other.
_STREAMS = {
    name: i + 1
    for i, name in enumerate(
        [
            "late",
            "lateness",
            "beyond",
            "tod",
            "delay",
            "account",
            "title",
            "country",
            "device",
            "view",
            "binge",
            "malformed",
            "malformed_kind",
            "event_id",
            "dup_lag",
            "dup_pick",
            "dup_time",
            "late_time",
        ]
    )
}

SOURCE_ARROW_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("account_id", pa.int64(), nullable=False),
        pa.field("title_id", pa.int64(), nullable=True),
        pa.field("country", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("view_seconds", pa.int32(), nullable=True),
        pa.field("ingest_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class EventModel:
    """Parameters of the generator (a projection of the scenario).

    Attributes:
        seed: makes every batch reproducible.
        start_date: date of processing day 0 (arrival batch 0).
        events_per_day: original events sent per arrival batch.
        late_fraction: share of events that arrive one day late or more.
        lateness_window_days: the window that separates "late" from "beyond the window"
            (the lookback's default window; fixed so that sweeping the lookback keeps the data).
        beyond_window_share: share of late events that are ``lateness_window_days`` or more late.
        max_lateness_days: the longest lateness generated.
        duplicate_fraction: re-sent copies per batch, as a share of ``events_per_day``.
        malformed_fraction: share of events with a null title or a bad view time.
        n_accounts: accounts that play.
        n_titles: titles in the catalog (popularity is Zipf-like).
    """

    seed: int
    start_date: date
    events_per_day: int
    late_fraction: float
    lateness_window_days: int
    beyond_window_share: float
    max_lateness_days: int
    duplicate_fraction: float
    malformed_fraction: float
    n_accounts: int
    n_titles: int


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection on uint64 with good avalanche."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Hasher:
    def __init__(self, seed: int) -> None:
        self._key = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]

    def bits(self, n: np.ndarray, stream: str) -> np.ndarray:
        salt = np.uint64(_STREAMS[stream] * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF)
        return _mix(n * np.uint64(0x2545F4914F6CDD1D) + (self._key ^ salt))

    def uniform(self, n: np.ndarray, stream: str) -> np.ndarray:
        return (self.bits(n, stream) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _choice(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(weights) - 1)


def lateness_days(model: EventModel, h: _Hasher, n: np.ndarray) -> np.ndarray:
    """Lateness of each original event: 0, within the window, or beyond it."""
    late = h.uniform(n, "late") < model.late_fraction
    beyond = h.uniform(n, "beyond") < model.beyond_window_share
    u = h.uniform(n, "lateness")
    window_max = model.lateness_window_days - 1
    # Within the window: truncated geometric, most late events are one day late.
    p = 0.45
    if window_max >= 1:
        span = 1.0 - (1.0 - p) ** window_max
        within = 1 + np.floor(np.log1p(-u * span) / np.log1p(-p)).astype(np.int64)
        within = np.clip(within, 1, window_max)
    else:
        within = np.ones_like(n, dtype=np.int64)
    # Beyond the window: log-uniform between the window and the longest lateness.
    lo = max(model.lateness_window_days, 1)
    hi = max(model.max_lateness_days, lo)
    far = np.floor(np.exp(np.log(lo) + u * (np.log(hi + 1) - np.log(lo)))).astype(np.int64)
    far = np.clip(far, lo, hi)
    if window_max < 1:
        beyond = np.ones_like(beyond)
    out = np.where(beyond, far, within)
    return np.where(late, out, 0)


def _payload(model: EventModel, h: _Hasher, n: np.ndarray) -> dict[str, np.ndarray]:
    """Columns that a re-sent duplicate repeats exactly (all but ``ingest_ts``)."""
    origin_day = (n // np.uint64(model.events_per_day)).astype(np.int64)
    lateness = lateness_days(model, h, n)
    event_day = origin_day - lateness
    # Diurnal: evening peak around 20:00 UTC, spread over the day.
    tri = h.uniform(n, "tod") + h.uniform(n, "delay") + h.uniform(n, "view") - 1.5
    tod_us = (((20.0 + tri * 8.0) % 24.0) * 3_600_000_000).astype(np.int64)
    start_us = (model.start_date - date(1970, 1, 1)).days * US_PER_DAY
    event_us = start_us + event_day * US_PER_DAY + tod_us

    account = (h.bits(n, "account") % np.uint64(model.n_accounts)).astype(np.int64) + 1
    # Zipf-like popularity (s ~ 1): log-uniform rank.
    title = np.floor(np.exp(h.uniform(n, "title") * np.log(model.n_titles))).astype(np.int64)
    country = _choice(h.uniform(n, "country"), COUNTRY_WEIGHTS)
    device = _choice(h.uniform(n, "device"), DEVICE_WEIGHTS)
    uv = h.uniform(n, "view")
    binge = h.uniform(n, "binge") < 0.01
    view = np.where(binge, -np.log1p(-uv) * 9000.0, -np.log1p(-uv) * 1500.0).astype(np.int64) + 1
    view = np.minimum(view, 2**31 - 1).astype(np.int32)

    malformed = h.uniform(n, "malformed") < model.malformed_fraction
    kind = h.uniform(n, "malformed_kind")
    title_null = malformed & (kind < 0.4)
    view_null = malformed & (kind >= 0.4) & (kind < 0.7)
    view_bad = malformed & (kind >= 0.7)
    view = np.where(view_bad, -(view % 100), view).astype(np.int32)

    event_id = h.bits(n, "event_id")
    return {
        "origin_day": origin_day,
        "lateness": lateness,
        "event_us": event_us,
        "tod_us": tod_us,
        "account": account,
        "title": title,
        "title_null": title_null,
        "country": country,
        "device": device,
        "view": view,
        "view_null": view_null,
        "event_id": event_id,
    }


def _to_arrow(p: dict[str, np.ndarray], ingest_us: np.ndarray) -> pa.Table:
    ids = pc.binary_join_element_wise("e", pc.cast(pa.array(p["event_id"]), pa.string()), "")
    ts = pa.timestamp("us", tz="UTC")
    return pa.Table.from_arrays(
        [
            ids,
            pa.array(p["account"], pa.int64()),
            pa.array(p["title"], pa.int64(), mask=p["title_null"]),
            COUNTRIES.take(pa.array(p["country"])),
            DEVICES.take(pa.array(p["device"])),
            pa.array(p["event_us"], ts),
            pa.array(p["view"], pa.int32(), mask=p["view_null"]),
            pa.array(ingest_us, ts),
        ],
        schema=SOURCE_ARROW_SCHEMA,
    )


def _duplicate_numbers(model: EventModel, h: _Hasher, day: int) -> np.ndarray:
    """Event numbers re-sent in batch ``day``: mostly the next day, some much later."""
    count = round(model.events_per_day * model.duplicate_fraction)
    if day == 0 or count == 0:
        return np.empty(0, dtype=np.uint64)
    j = np.arange(count, dtype=np.uint64) + np.uint64(day) * np.uint64(1 << 32)
    u = h.uniform(j, "dup_lag")
    lag = np.where(
        u < 0.7, 1, np.where(u < 0.9, 2 + (u * 1000).astype(np.int64) % 6, 8 + (u * 1e6).astype(np.int64) % 33)
    )
    lag = np.minimum(lag, day)
    origin = day - lag
    pick = (h.bits(j, "dup_pick") % np.uint64(model.events_per_day)).astype(np.int64)
    return (origin * model.events_per_day + pick).astype(np.uint64)


def arrival_batch(model: EventModel, day: int) -> pa.Table:
    """All events that arrive on processing day ``day`` (originals and duplicates)."""
    h = _Hasher(model.seed)
    e = model.events_per_day
    n = np.arange(day * e, (day + 1) * e, dtype=np.uint64)
    p = _payload(model, h, n)
    start_us = (model.start_date - date(1970, 1, 1)).days * US_PER_DAY
    day_start = start_us + day * US_PER_DAY
    day_end = day_start + US_PER_DAY - 1
    # On time: ingested a few minutes after playback, never after the day ends.
    delay_us = (h.uniform(n, "delay") * 1_800_000_000).astype(np.int64)
    on_time_ingest = np.minimum(p["event_us"] + delay_us, day_end)
    late_ingest = day_start + (h.uniform(n, "late_time") * (US_PER_DAY - 1)).astype(np.int64)
    ingest = np.where(p["lateness"] > 0, late_ingest, on_time_ingest)
    originals = _to_arrow(p, ingest)

    dup_n = _duplicate_numbers(model, h, day)
    if len(dup_n) == 0:
        return originals
    dp = _payload(model, h, dup_n)
    dup_ingest = day_start + (h.uniform(dup_n, "dup_time") * (US_PER_DAY - 1)).astype(np.int64)
    # A re-send can never arrive before its original did.
    dup_ingest = np.maximum(dup_ingest, dp["event_us"])
    return pa.concat_tables([originals, _to_arrow(dp, np.minimum(dup_ingest, day_end))])


IMPRESSIONS_ARROW_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("account_id", pa.int64(), nullable=False),
        pa.field("title_id", pa.int64(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ingest_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
# Impressions come from their own hash streams: the seed is salted.
_IMPRESSION_SALT = 0x1D3A5C7E9B2F4680


def impression_batch(model: EventModel, day: int, impressions_per_day: int) -> pa.Table:
    """Impressions (a title shown to an account) arriving on processing day ``day``.

    The same lateness and re-send model as playback events, ``impressions_per_day``
    originals per batch, none malformed; ids start with ``i``.
    """
    if impressions_per_day == 0:
        return IMPRESSIONS_ARROW_SCHEMA.empty_table()
    own = dataclasses.replace(
        model, seed=model.seed ^ _IMPRESSION_SALT, events_per_day=impressions_per_day, malformed_fraction=0.0
    )
    shown = arrival_batch(own, day)
    ids = pc.binary_join_element_wise("i", pc.utf8_slice_codeunits(shown.column("event_id"), 1), "")
    return pa.Table.from_arrays(
        [ids, *(shown.column(f.name) for f in IMPRESSIONS_ARROW_SCHEMA if f.name != "event_id")],
        schema=IMPRESSIONS_ARROW_SCHEMA,
    )
