"""Leads as CSV, streamed row by row, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from leads.models import Lead

COLUMNS = [
    "id",
    "bot",
    "email",
    "name",
    "phone",
    "company",
    "status",
    "score",
    "score_breakdown",
    "source",
    "consent",
    "country",
    "region",
    "city",
    "nearest_area",
    "distance_km",
    "hubspot_id",
    "created_at",
]
# A cell starting with one of these is run as a formula by Excel, LibreOffice and
# Google Sheets (CSV injection, OWASP): a leading quote makes it text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def lead_row(lead: Lead) -> list[str]:
    breakdown = "; ".join(f"{line['marker']} {line['points']:+d}" for line in lead.score_breakdown or [])
    values = [
        lead.pk,
        lead.bot.name,
        lead.email,
        lead.name,
        lead.phone,
        lead.company,
        lead.status,
        lead.score,
        breakdown,
        lead.source,
        "yes" if lead.consent else "no",
        lead.country,
        lead.region,
        lead.city,
        lead.nearest_area.name if lead.nearest_area else "",
        "" if lead.distance_km is None else f"{lead.distance_km:.2f}",
        lead.hubspot_id,
        lead.created_at.isoformat(),
    ]
    return [safe_cell(v) for v in values]


class _Line:
    """A file-like object whose write returns the line (csv.writer writes one row per call)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(leads: Iterable[Lead]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(COLUMNS)
    for lead in leads:
        yield writer.writerow(lead_row(lead))
