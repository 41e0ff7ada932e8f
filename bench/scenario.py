"""The scenario: one frozen dataclass, named presets, validation of user input."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from bench.contract import SCENARIO_FILE as SCENARIO_FILE  # re-exported: step-wise tests read it here
from bench.contract import STRATEGIES, Strategy
from datagen.model import MINUTES_PER_DAY, EventModel

ENGINES = ("duckdb", "spark")
CHECKS = ("end", "daily", "batch")
LOOKBACK_BACKFILLS = ("none", "manual")
# ``write.merge.mode`` of the IPS targets. Merge-on-read is the default: in total the two tie on
# `small` and merge-on-read leads on `medium` (its delete files' compaction included); its merges
# by key cost less and write about a ninth of the bytes (README, "Current figures").
MERGE_MODES = ("merge-on-read", "copy-on-write")
DEFAULT_MERGE_MODE = MERGE_MODES[0]
# Upper bounds, so that a typo is refused up front rather than after hours: a span of days
# beyond this leaves the calendar's range in date arithmetic long before it means anything;
# one arrival batch is generated in memory (about 100 bytes an event); the generator and the
# result files take a seed as a 32-bit unsigned integer.
MAX_DAYS = 3_660
MAX_EVENTS_PER_DAY = 100_000_000
MAX_SEED = 2**32 - 1
MAX_REPEATS = 100


class BadScenario(ValueError):
    """An option is out of range; the message says which, in one line."""


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a run; every result file echoes it.

    Attributes:
        preset: the preset the other fields started from.
        days: processing days simulated (one day of arrivals each).
        warmup_days: first days, not counted in totals: ingested, then run once (``first_run_day``).
        events_per_day: original events arriving per day.
        late_fraction: share of events arriving one day late or more.
        lookback_days: the lookback window X.
        beyond_window_share: share of late events arriving ``lateness_window_days`` or more days late.
        lateness_window_days: the window the lateness model refers to (default 14, the
            lookback's default); independent of ``lookback_days`` so a sweep over the
            lookback window runs every window on the same data.
        max_lateness_days: the longest lateness generated.
        duplicate_fraction: re-sent events per batch, as a share of events_per_day.
        malformed_fraction: share of events with a null title or bad view time.
        n_accounts: accounts (0: events_per_day / 4).
        n_titles: titles (Zipf-like popularity).
        seed: generator seed.
        start_date: date of processing day 0.
        engine: duckdb or spark.
        strategies: which strategies run.
        check: compare with the oracle at the end, after every day, or after every arrival batch.
        repeats: whole-run repeats (figures are medians).
        events_file: a user's events instead of the generator.
        impressions_file: a user's impressions beside ``events_file`` (without it, none).
        maintenance_every_days: compact small files and expire old snapshots this often (0: never).
        privacy_delete_every_days: delete every event of some accounts from the source this often
            (0: never), as a privacy request would: a non-append upstream change.
        privacy_delete_accounts: accounts removed by each privacy delete.
        merge_mode: ``write.merge.mode`` of the IPS targets: merge-on-read (a
            merge by key writes position-delete files and the new rows; both
            engines), or copy-on-write (it rewrites the partitions it touches).
        batch_minutes: length of an arrival batch; it divides a day (1440: one batch a day).
            IPS runs after every batch, the lookback after the day's last one.
        lookback_every_batch: run the lookback after every batch too, not once a day.
    """

    preset: str = "small"
    days: int = 24
    warmup_days: int = 14
    events_per_day: int = 100_000
    late_fraction: float = 0.03
    lookback_days: int = 14
    beyond_window_share: float = 0.05
    lateness_window_days: int = 14
    max_lateness_days: int = 60
    duplicate_fraction: float = 0.005
    malformed_fraction: float = 0.002
    n_accounts: int = 0
    n_titles: int = 5_000
    seed: int = 42
    start_date: date = date(2026, 1, 1)
    engine: str = "duckdb"
    strategies: tuple[Strategy, ...] = STRATEGIES
    check: str = "end"
    repeats: int = 1
    events_file: str | None = None
    impressions_file: str | None = None
    maintenance_every_days: int = 7
    privacy_delete_every_days: int = 0
    privacy_delete_accounts: int = 1
    merge_mode: str = DEFAULT_MERGE_MODE
    spark_master: str = field(default="local[*]")
    # Impressions per arrival batch (None: as many as playback events).
    impressions_per_day: int | None = None
    # Upstream repopulation (issue 16): on processing day ``repopulate_day`` the source's event dates
    # start_date + repopulate_from_day .. + repopulate_to_day are rewritten with corrected
    # view_seconds as one OVERWRITE (None: never).
    repopulate_day: int | None = None
    repopulate_from_day: int = 0
    repopulate_to_day: int = 0
    # After a repopulation the lookback's user backfills every stage it reaches, in lineage
    # order ("manual"), or leaves it to the window ("none").
    lookback_backfill: str = "none"
    # Logic change (issue 16): from processing day ``logic_change_day`` stage 1 caps view time at
    # ``new_view_seconds_cap`` on event dates from start_date + logic_change_from_day on, and
    # that history is restated under it (None: never).
    logic_change_day: int | None = None
    logic_change_from_day: int = 0
    new_view_seconds_cap: int = 10_800
    batch_minutes: int = MINUTES_PER_DAY
    lookback_every_batch: bool = False

    @property
    def accounts(self) -> int:
        return self.n_accounts or max(100, self.events_per_day // 4)

    @property
    def impressions(self) -> int:
        """Impressions generated per arrival batch (none with a user's events file)."""
        if self.events_file is not None:
            return 0
        return self.events_per_day if self.impressions_per_day is None else self.impressions_per_day

    @property
    def batches_per_day(self) -> int:
        return MINUTES_PER_DAY // self.batch_minutes

    @property
    def maintenance_period_days(self) -> int:
        """Days between maintenance runs (0: never): ``maintenance_every_days`` at one batch a day; at a
        shorter cadence as many runs between two maintenances (snapshots grow with runs), at least a day."""
        if self.maintenance_every_days == 0:
            return 0
        return max(1, self.maintenance_every_days // self.batches_per_day)

    @property
    def measured_days(self) -> int:
        return max(self.days - self.warmup_days, 0)

    def event_model(self) -> EventModel:
        return EventModel(
            seed=self.seed,
            start_date=self.start_date,
            events_per_day=self.events_per_day,
            late_fraction=self.late_fraction,
            lateness_window_days=self.lateness_window_days,
            beyond_window_share=self.beyond_window_share,
            max_lateness_days=self.max_lateness_days,
            duplicate_fraction=self.duplicate_fraction,
            malformed_fraction=self.malformed_fraction,
            n_accounts=self.accounts,
            n_titles=self.n_titles,
        )

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["start_date"] = self.start_date.isoformat()
        d["strategies"] = list(self.strategies)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Scenario:
        d = dict(d)
        d["start_date"] = date.fromisoformat(d["start_date"])
        d["strategies"] = tuple(d["strategies"])
        return Scenario(**d)

    def validate(self) -> Scenario:
        """Raise ``BadScenario`` for any out-of-range field; returns self."""
        for name in (
            "days",
            "events_per_day",
            "lookback_days",
            "max_lateness_days",
            "repeats",
            "n_titles",
            "lateness_window_days",
        ):
            if getattr(self, name) < 1:
                raise BadScenario(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        for name in ("late_fraction", "beyond_window_share", "duplicate_fraction", "malformed_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise BadScenario(f"{name.replace('_', '-')} must be in [0, 1), got {v}")
        for name, most in (
            ("days", MAX_DAYS),
            ("lookback_days", MAX_DAYS),
            ("lateness_window_days", MAX_DAYS),
            ("max_lateness_days", MAX_DAYS),
            ("maintenance_every_days", MAX_DAYS),
            ("privacy_delete_every_days", MAX_DAYS),
            ("events_per_day", MAX_EVENTS_PER_DAY),
            ("n_accounts", MAX_EVENTS_PER_DAY),
            ("n_titles", MAX_EVENTS_PER_DAY),
            ("privacy_delete_accounts", MAX_EVENTS_PER_DAY),
            ("repeats", MAX_REPEATS),
        ):
            if getattr(self, name) > most:
                raise BadScenario(f"{name.replace('_', '-')} must be at most {most:,}, got {getattr(self, name):,}")
        if not 0 <= self.seed <= MAX_SEED:
            raise BadScenario(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        if self.warmup_days < 0 or self.warmup_days >= self.days:
            raise BadScenario(f"warmup days ({self.warmup_days}) must be fewer than days ({self.days})")
        if self.privacy_delete_every_days < 0 or self.privacy_delete_accounts < 1:
            raise BadScenario("privacy-delete-every-days must be >= 0 and privacy-delete-accounts >= 1")
        if self.maintenance_every_days < 0:
            raise BadScenario("maintenance-every-days must not be negative")
        if self.n_accounts < 0:
            raise BadScenario("n-accounts must not be negative")
        if self.impressions_per_day is not None and not 0 <= self.impressions_per_day <= MAX_EVENTS_PER_DAY:
            raise BadScenario(
                f"impressions-per-day must be in [0, {MAX_EVENTS_PER_DAY:,}], got {self.impressions_per_day:,}"
            )
        if self.beyond_window_share > 0 and self.max_lateness_days < self.lateness_window_days:
            raise BadScenario(
                f"beyond-window-share > 0 needs max-lateness-days ({self.max_lateness_days}) "
                f">= lateness-window-days ({self.lateness_window_days})"
            )
        if self.engine not in ENGINES:
            raise BadScenario(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if not self.strategies or any(s not in STRATEGIES for s in self.strategies):
            raise BadScenario(
                f"strategies must be a comma list of {', '.join(STRATEGIES)}, got {','.join(self.strategies)}"
            )
        if len(set(self.strategies)) != len(self.strategies):
            raise BadScenario("a strategy is listed twice")
        if self.merge_mode not in MERGE_MODES:
            raise BadScenario(f"merge mode must be one of {', '.join(MERGE_MODES)}, got {self.merge_mode!r}")
        if not 1 <= self.batch_minutes <= MINUTES_PER_DAY or MINUTES_PER_DAY % self.batch_minutes:
            raise BadScenario(
                f"batch-minutes must divide a day ({MINUTES_PER_DAY} minutes: 15, 60, 240, ...), "
                f"got {self.batch_minutes}"
            )
        if self.check not in CHECKS:
            raise BadScenario(f"check must be one of {', '.join(CHECKS)}")
        if self.repopulate_day is not None and not (
            0 <= self.repopulate_from_day <= self.repopulate_to_day <= self.repopulate_day < self.days
        ):
            raise BadScenario(
                "repopulation needs 0 <= repopulate-from-day <= repopulate-to-day <= repopulate-day < days, got "
                f"{self.repopulate_from_day}, {self.repopulate_to_day}, {self.repopulate_day}, {self.days}"
            )
        if self.logic_change_day is not None and not (
            0 <= self.logic_change_from_day <= self.logic_change_day < self.days and self.new_view_seconds_cap >= 1
        ):
            raise BadScenario(
                "a logic change needs 0 <= logic-change-from-day <= logic-change-day < days and "
                f"new-view-seconds-cap >= 1, got {self.logic_change_from_day}, {self.logic_change_day}, "
                f"{self.days}, {self.new_view_seconds_cap}"
            )
        if self.logic_change_day is not None and self.repopulate_day is not None:
            raise BadScenario("give a repopulation or a logic change, not both in one run")
        if self.lookback_backfill not in LOOKBACK_BACKFILLS:
            raise BadScenario(
                f"lookback-backfill must be one of {', '.join(LOOKBACK_BACKFILLS)}, got {self.lookback_backfill!r}"
            )
        return self


PRESETS: dict[str, Scenario] = {
    # For tests: seconds. A short window so that late data also falls beyond it.
    "tiny": Scenario(
        preset="tiny",
        days=16,
        warmup_days=4,
        events_per_day=2_000,
        lookback_days=5,
        lateness_window_days=5,
        late_fraction=0.05,
        beyond_window_share=0.15,
        max_lateness_days=15,
        duplicate_fraction=0.02,
        malformed_fraction=0.01,
        n_titles=300,
    ),
    # `make bench` (<= 3 min) and medium (<= 15 min): the warm-up is ingested, then run once.
    "small": Scenario(preset="small", days=24, warmup_days=14, events_per_day=100_000),
    "medium": Scenario(preset="medium", days=22, warmup_days=14, events_per_day=1_000_000),
    "large": Scenario(preset="large", days=45, warmup_days=14, events_per_day=3_000_000),
}


def from_preset(name: str, **overrides: Any) -> Scenario:
    """The preset ``name`` with ``overrides`` (None values ignored), validated."""
    if name not in PRESETS:
        raise BadScenario(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    fields = {k: v for k, v in overrides.items() if v is not None}
    try:
        return dataclasses.replace(PRESETS[name], **fields).validate()
    except TypeError as e:
        raise BadScenario(str(e)) from None
