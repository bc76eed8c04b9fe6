"""The two small charts on the leads changelist, as data for server-rendered SVG.

Rendered as inline SVG by the template (no script, no CDN): it works under the
strict Content-Security-Policy and in any browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Count, IntegerField, QuerySet
from django.db.models.functions import Cast, Least, TruncDate
from django.utils import timezone

CHART_DAYS = 30
BAR_WIDTH = 10
BAR_GAP = 2
CHART_HEIGHT = 60
SCORE_BUCKETS = 10


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    x: int
    y: int
    height: int


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    width: int
    height: int = CHART_HEIGHT
    total: int = 0


def _chart(title: str, items: list[tuple[str, int]]) -> Chart:
    peak = max((count for _, count in items), default=0) or 1
    bars = []
    for i, (label, count) in enumerate(items):
        # A non-zero count always shows at least one pixel.
        height = round(CHART_HEIGHT * count / peak) if count else 0
        height = max(height, 1) if count else 0
        bars.append(Bar(label, count, i * (BAR_WIDTH + BAR_GAP), CHART_HEIGHT - height, height))
    return Chart(title, bars, width=len(items) * (BAR_WIDTH + BAR_GAP), total=sum(c for _, c in items))


def leads_per_day(leads: QuerySet, *, today: date | None = None) -> Chart:
    today = today or timezone.localdate()
    start = today - timedelta(days=CHART_DAYS - 1)
    rows = (
        leads.filter(created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .order_by()
        .values("day")
        .annotate(n=Count("id"))
    )
    counts = {row["day"]: row["n"] for row in rows}
    days = [start + timedelta(days=i) for i in range(CHART_DAYS)]
    return _chart(f"Leads per day (last {CHART_DAYS} days)", [(d.isoformat(), counts.get(d, 0)) for d in days])


def score_distribution(leads: QuerySet) -> Chart:
    bucket = Least(Cast("score", IntegerField()) / 10, SCORE_BUCKETS - 1)
    rows = leads.annotate(bucket=bucket).order_by().values("bucket").annotate(n=Count("id"))
    counts = {row["bucket"]: row["n"] for row in rows}
    labels = [f"{b * 10}-{b * 10 + 9 if b < SCORE_BUCKETS - 1 else 100}" for b in range(SCORE_BUCKETS)]
    return _chart("Score distribution", [(labels[b], counts.get(b, 0)) for b in range(SCORE_BUCKETS)])
