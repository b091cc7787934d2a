"""Hourly means of one tag's good values over a time range, from the downsampled aggregates and the raw readings.

Read-only, like ``queries``: a constant statement with parameters and a function turning its rows into values.
Retention folds raw readings into ``aggregates`` and deletes them in one transaction, so a reading is counted in
one place or the other, never both. Both are cut into slots of the downsampling interval: an aggregate bucket is
one slot, and counts only when every value folded into it was good (``n_good = n_values``: its mean is then a mean
of good values); raw readings count when good and not NULL. An hour's mean is the count-weighted mean of its
slots, its coverage the number of distinct slots with a good value times the interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.adapters.sqlite.readings import QUALITY_CODES
from gateway.domain.model import Quality
from gateway.domain.twin import HourlyMean

_GOOD = QUALITY_CODES[Quality.GOOD]

HOURLY_MEANS = f"""
WITH tag(id) AS (SELECT id FROM tags WHERE name = :tag),
slots(slot, total, n) AS (
    SELECT a.bucket_start, a.mean * a.n_values, a.n_values FROM aggregates a, tag
    WHERE a.tag_id = tag.id AND a.bucket_start >= :since AND a.bucket_start < :until
      AND a.n_values > 0 AND a.n_good = a.n_values AND a.mean IS NOT NULL
    UNION ALL
    SELECT CAST(r.source_ts / :iv AS INTEGER) * :iv, sum(r.value), count(*)
    FROM reading_spans s CROSS JOIN readings r CROSS JOIN tag
    WHERE s.first_id >= (SELECT min(first_id) FROM reading_spans INDEXED BY reading_spans_max WHERE max_ts >= :since)
      AND s.max_ts >= :since AND s.min_ts < :until
      AND r.id BETWEEN s.first_id AND s.last_id AND r.source_ts >= :since AND r.source_ts < :until
      AND r.tag_id = tag.id AND r.quality = {_GOOD} AND r.value IS NOT NULL
    GROUP BY 1
)
SELECT CAST((slot + :offset) / 3600.0 AS INTEGER) AS hour, sum(total), sum(n), count(DISTINCT slot)
FROM slots GROUP BY hour HAVING sum(n) > 0 ORDER BY hour
"""  # noqa: S608 - a constant quality code, no data
"""Raw readings are found like ``queries.EXPORT_ALL``'s: ``reading_spans`` maps the time range to id ranges. Slots
are cut as retention cuts its buckets; hours by truncation (POSIX times after 1970 are positive)."""


def hourly_params(*, tag: str, since: float, until: float, utc_offset_s: float, interval_s: int) -> dict[str, Any]:
    return {"tag": tag, "since": since, "until": until, "offset": utc_offset_s, "iv": interval_s}


def hourly_means_of(rows: Iterable[Any], *, utc_offset_s: float, interval_s: int) -> list[HourlyMean]:
    """``HOURLY_MEANS`` rows (local hour number, sum, count, slots) as ``HourlyMean``s with POSIX starts."""
    return [
        HourlyMean(start=hour * 3600.0 - utc_offset_s, mean=total / n, covered_s=min(3600.0, slots * interval_s))
        for hour, total, n, slots in rows
    ]
