"""The Exchange side's interface and its backend-neutral records (no exchangelib here).

Record dicts returned by ``fetch`` (the pipeline depends on exactly these keys):
Record dicts returned by ``fetch`` (the pipeline depends on exactly these keys):

| key | meaning |
|---|---|
| item_id, change_key | EWS ids |
| item_type | 'Single', 'Occurrence', 'Exception' or 'RecurringMaster' |
| uid, recurrence_id | iCalendar UID; original start (UTC) of an occurrence/exception, else None |
| master_item_id | None (EWS GetItem does not name an occurrence's master) |
| subject, location, body, body_type | body_type 'HTML' or 'Text' |
| start, end | aware UTC datetimes; for all-day items local midnight in the item's zone |
| is_all_day, start_date, end_date | dates for all-day items, end inclusive; else None |
| timezone_windows, timezone_iana | the zone the server named, and its IANA name (None if unknown) |
| sensitivity | 'Normal', 'Personal', 'Private' or 'Confidential' |
| reminder_is_set, reminder_minutes | |
| legacy_free_busy | 'Free', 'Tentative', 'Busy', 'OOF', 'WorkingElsewhere' or 'NoData' |
| categories, last_modified, is_recurring | |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

GENERAL = "General connection"
SEND_RECEIVE = "Send/receive data"


class ExchangeCalendar(Protocol):
    """One mailbox's calendar, whatever the API behind it."""

    def probe(self) -> None: ...

    def close(self) -> None: ...

    def test(self, write: bool = True, app_user_email: str | None = None) -> ConnectionReport: ...

    def sync_changes(
        self, state: str | None, max_changes: int = 512
    ) -> tuple[str, list[dict[str, Any]], bool]: ...

    def read_index(self, start: datetime, end: datetime) -> list[dict[str, Any]]: ...

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]: ...

    def create(self, record: dict[str, Any]) -> tuple[str, str]: ...

    def delete(self, item_id: str) -> None: ...


@dataclass
class ReportPart:
    name: str
    ok: bool | None  # None: not run
    message: str


@dataclass
class ConnectionReport:
    """The two-part connection test: General connection, Send/receive data."""

    parts: list[ReportPart] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.parts) and all(part.ok for part in self.parts)

    def __str__(self) -> str:
        lines = []
        for part in self.parts:
            state = "OK" if part.ok else ("not run" if part.ok is None else "FAILED")
            lines.append(f"{part.name}: {state}" + (f" — {part.message}" if part.message else ""))
        return "\n".join(lines)
