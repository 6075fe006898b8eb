"""Deterministic synthetic mailboxes for the bench: N appointments, some of them series."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ZONES = ["W. Europe Standard Time", "GMT Standard Time", "Eastern Standard Time"]
IANA = {
    "W. Europe Standard Time": "Europe/Berlin",
    "GMT Standard Time": "Europe/London",
    "Eastern Standard Time": "America/New_York",
}
OCCURRENCES_PER_SERIES = 10
BODY = (
    "<html><body><p class=MsoNormal>Auftrag {n}: {task}.<o:p></o:p></p>"
    "<p class=MsoNormal>Kunde&nbsp;{customer}, Telefon 030 {phone}</p></body></html>"
)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_mailbox(
    n_items: int = 10000, n_series: int = 300, anchor: date | None = None, seed: int = 1,
    weeks_back: int = 8, weeks_ahead: int = 44,
) -> dict:  # fmt: skip
    """A fixture dict with ``n_items`` appointments inside the window around ``anchor``:
    ``n_series`` weekly series of 10 occurrences each, the rest single items."""
    rng = random.Random(seed)
    anchor = anchor or date(2026, 11, 23)
    first_day = anchor - timedelta(weeks=weeks_back) + timedelta(days=1)
    span_days = (weeks_back + weeks_ahead) * 7 - 2
    series_days = span_days - 7 * OCCURRENCES_PER_SERIES
    n_series = min(n_series, n_items // OCCURRENCES_PER_SERIES)
    items = []
    for n in range(n_series):
        zone = rng.choice(ZONES)
        day = first_day + timedelta(days=rng.randrange(max(series_days, 1)))
        start = datetime.combine(day, time(rng.randrange(7, 17)), tzinfo=ZoneInfo(IANA[zone]))
        items.append(
            {
                "subject": f"Serie {n}: Wartungsrunde",
                "start": _iso(start),
                "end": _iso(start + timedelta(minutes=45)),
                "timezone": zone,
                "body": BODY.format(n=n, task="Wartung", customer=f"K{n}", phone=n),
                "categories": ["Wartung"],
                "recurrence": {
                    "pattern": "weekly",
                    "interval": 1,
                    "start": day.isoformat(),
                    "count": OCCURRENCES_PER_SERIES,
                },
            }
        )
    for n in range(n_items - n_series * OCCURRENCES_PER_SERIES):
        zone = rng.choice(ZONES)
        day = first_day + timedelta(days=rng.randrange(span_days))
        start = datetime.combine(
            day,
            time(rng.randrange(6, 19), rng.choice((0, 15, 30, 45))),
            tzinfo=ZoneInfo(IANA[zone]),
        )
        items.append(
            {
                "subject": f"Einsatz {n}",
                "start": _iso(start),
                "end": _iso(start + timedelta(minutes=rng.choice((30, 60, 90, 120)))),
                "timezone": zone,
                "location": f"Musterstr. {n % 200}, Berlin",
                "body": BODY.format(
                    n=n,
                    task=rng.choice(("Reparatur", "Inspektion", "Montage")),
                    customer=f"K{n}",
                    phone=n,
                ),  # fmt: skip
                "body_type": "HTML",
                "reminder_minutes": rng.choice((None, 15, 30)),
                "sensitivity": "Normal",
            }
        )
    return {"anchor": anchor.isoformat(), "mailboxes": [{"email": None, "items": items}]}
