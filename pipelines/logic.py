"""The business logic of every stage, written once.

Lookback, IPS and the oracle run exactly these statements; they differ only
in which rows the input relation holds (``{events}`` for stage 1, ``{daily}``
for stage 2) and how the output is written. Which stage reads what is
declared in ``pipelines.pipeline``. The SQL is plain enough to run on DuckDB
and Spark SQL alike when the session time zone is UTC.
"""

from __future__ import annotations

VIEW_SECONDS_CAP = 14_400
TOP_TITLES = 10

# An event's date: the UTC date of its timestamp (every session runs in UTC).
EVENT_DATE = "CAST(event_ts AS DATE)"
# A valid playback event; the others are malformed and dropped by stage 1.
VALID = "title_id IS NOT NULL AND view_seconds > 0"
# A narrow 64-bit probe key derived from event_id: the first 60 bits of its MD5,
# positive in a BIGINT. Spark's conv() does the hex conversion; the DuckDB engine
# defines a conv() macro for base 16 to 10 that gives the same values (tested).
# It is never an identity: a match on it is confirmed on event_id.
EVENT_KEY = "CAST(conv(substr(md5(event_id), 1, 15), 16, 10) AS BIGINT)"
# The copy of an event stage 1 keeps comes first in this order: the earliest
# arrival, and among copies that arrived together the smallest payload.
KEPT_COPY_ORDER = ("ingest_ts", "country", "device", "account_id", "title_id", "view_seconds")


# Stage 1: valid events, one row per event_id (the first copy in KEPT_COPY_ORDER),
# view time capped. Most events arrive once: only the ids
# seen more than once go through the window that ranks arrivals. The same rows
# as ranking every id, for about a quarter less on DuckDB, which evaluates
# ``valid`` once (Spark may inline it and read the input again).
def playback_daily(cap: str = str(VIEW_SECONDS_CAP)) -> str:
    """Stage 1's SQL with the view-time cap ``cap`` (a SQL expression: a number, or one per event date)."""
    columns = f"""event_id, {EVENT_KEY} AS event_key, {EVENT_DATE} AS event_date, event_ts,
       account_id, title_id, country, device, LEAST(view_seconds, {cap}) AS view_seconds"""
    return f"""
WITH valid AS (
  SELECT * FROM {{events}} WHERE {VALID}
), repeated AS (
  SELECT event_id FROM valid GROUP BY event_id HAVING COUNT(*) > 1
)
SELECT {columns}
FROM valid
WHERE NOT EXISTS (SELECT 1 FROM repeated AS r WHERE r.event_id = valid.event_id)
UNION ALL
SELECT {columns}
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY {", ".join(KEPT_COPY_ORDER)}) AS arrival_rank
  FROM valid
  WHERE EXISTS (SELECT 1 FROM repeated AS r WHERE r.event_id = valid.event_id)
) AS copies
WHERE arrival_rank = 1
"""


def cap_from(first: str, new_cap: int, old_cap: int = VIEW_SECONDS_CAP) -> str:
    """A view-time cap that changes version on event date ``first`` (ISO): the new one on and after it."""
    return f"CASE WHEN {EVENT_DATE} >= DATE '{first}' THEN {int(new_cap)} ELSE {int(old_cap)} END"


PLAYBACK_DAILY = playback_daily()

# Stage 2a: per account and day.
PLAYBACK_DAILY_AGG = """
SELECT event_date, account_id,
       CAST(SUM(view_seconds) AS BIGINT) AS total_view_seconds,
       CAST(COUNT(*) AS BIGINT) AS plays,
       CAST(COUNT(DISTINCT title_id) AS BIGINT) AS distinct_titles
FROM {daily}
GROUP BY event_date, account_id
"""

# Stage 2b: top titles per country and day; the window spans a whole partition.
# viewers is COUNT(DISTINCT account_id) per title, computed as the number of
# (title, account) groups: the same figure, and DuckDB's two plain GROUP BYs
# cost about a sixth less than its distinct aggregate.
TITLE_DAILY_RANK = f"""
SELECT event_date, country, CAST(title_rank AS INT) AS title_rank, title_id, view_seconds, viewers
FROM (
  SELECT *, ROW_NUMBER() OVER (
           PARTITION BY event_date, country ORDER BY view_seconds DESC, title_id ASC) AS title_rank
  FROM (
    SELECT event_date, country, title_id,
           CAST(SUM(view_seconds) AS BIGINT) AS view_seconds,
           CAST(COUNT(account_id) AS BIGINT) AS viewers
    FROM (
      SELECT event_date, country, title_id, account_id, SUM(view_seconds) AS view_seconds
      FROM {{daily}}
      GROUP BY event_date, country, title_id, account_id
    ) AS per_viewer
    GROUP BY event_date, country, title_id
  ) AS per_title
) AS ranked
WHERE title_rank <= {TOP_TITLES}
"""

# Stage 2c: per title and day, distinct impressions and plays; a title with
# either side missing counts 0 on it. Two inputs: a change in either changes the row.
TITLE_TAKE_RATE = f"""
SELECT COALESCE(i.event_date, p.event_date) AS event_date, COALESCE(i.title_id, p.title_id) AS title_id,
       CAST(COALESCE(i.impressions, 0) AS BIGINT) AS impressions, CAST(COALESCE(p.plays, 0) AS BIGINT) AS plays
FROM (
  SELECT {EVENT_DATE} AS event_date, title_id, COUNT(DISTINCT event_id) AS impressions
  FROM {{impressions}}
  GROUP BY {EVENT_DATE}, title_id
) AS i
FULL OUTER JOIN (
  SELECT event_date, title_id, COUNT(*) AS plays
  FROM {{daily}}
  GROUP BY event_date, title_id
) AS p ON i.event_date = p.event_date AND i.title_id = p.title_id
"""

# Stage 2d: per account and day, its view time and its running total over all
# its dates. ``{base}`` holds, per account, the cumulative value before the
# first date ``{daily}`` holds for it (empty when ``{daily}`` starts at the
# account's first play): the lookback and IPS read it from their own target,
# the oracle needs none.
ACCOUNT_CUMULATIVE = """
SELECT p.event_date, p.account_id, p.day_view_seconds,
       CAST(COALESCE(b.cumulative_view_seconds, 0) + SUM(p.day_view_seconds) OVER (
           PARTITION BY p.account_id ORDER BY p.event_date ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
       ) AS BIGINT) AS cumulative_view_seconds
FROM (
  SELECT event_date, account_id, CAST(SUM(view_seconds) AS BIGINT) AS day_view_seconds
  FROM {daily}
  GROUP BY event_date, account_id
) AS p
LEFT JOIN {base} AS b ON b.account_id = p.account_id
"""

# The base of stage 2d: each account's latest cumulative value among the rows
# of ``{before}`` (its own target, cut before the dates being recomputed).
CUMULATIVE_BASE = """
SELECT account_id, cumulative_view_seconds
FROM (
  SELECT account_id, cumulative_view_seconds,
         ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY event_date DESC) AS recency
  FROM {before}
) AS latest
WHERE recency = 1
"""
