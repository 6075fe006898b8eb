"""EWS <t:Recurrence> <-> the mailbox model's recurrence dict."""

from __future__ import annotations

from datetime import date
from xml.sax.saxutils import escape

from lxml import etree

T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS = {"t": T}
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
PATTERN_TAGS = {
    "DailyRecurrence": "daily",
    "WeeklyRecurrence": "weekly",
    "AbsoluteMonthlyRecurrence": "absolute_monthly",
    "RelativeMonthlyRecurrence": "relative_monthly",
    "AbsoluteYearlyRecurrence": "absolute_yearly",
    "RelativeYearlyRecurrence": "relative_yearly",
}
TAG_OF = {pattern: tag for tag, pattern in PATTERN_TAGS.items()}


def _date(text: str) -> date:
    return date.fromisoformat(text.strip()[:10])  # "2026-11-23", "2026-11-23Z", "…+01:00"


def parse(element) -> dict:
    """<t:Recurrence> -> {"pattern": …, "interval", "weekdays", "day_of_month", "month",
    "week_index", "start", "end" | "count"}."""
    rule: dict = {}
    for child in element:
        tag = etree.QName(child).localname
        if tag in PATTERN_TAGS:
            rule["pattern"] = PATTERN_TAGS[tag]
            rule["interval"] = int(child.findtext("t:Interval", "1", NS))
            days = child.findtext("t:DaysOfWeek", None, NS)
            if days:
                rule["weekdays"] = days.split()
            if child.findtext("t:DayOfMonth", None, NS):
                rule["day_of_month"] = int(child.findtext("t:DayOfMonth", namespaces=NS))
            if child.findtext("t:Month", None, NS):
                rule["month"] = MONTHS.index(child.findtext("t:Month", namespaces=NS)) + 1
            if child.findtext("t:DayOfWeekIndex", None, NS):
                rule["week_index"] = child.findtext("t:DayOfWeekIndex", namespaces=NS)
        elif tag in ("EndDateRecurrence", "NumberedRecurrence", "NoEndRecurrence"):
            rule["start"] = _date(child.findtext("t:StartDate", namespaces=NS))
            if tag == "EndDateRecurrence":
                rule["end"] = _date(child.findtext("t:EndDate", namespaces=NS))
            if tag == "NumberedRecurrence":
                rule["count"] = int(child.findtext("t:NumberOfOccurrences", namespaces=NS))
    return rule


def render(rule: dict) -> str:
    """The recurrence dict as <t:Recurrence> (element order as types.xsd defines it)."""
    pattern = rule["pattern"]
    parts = []
    if pattern != "absolute_yearly" and pattern != "relative_yearly":
        parts.append(f"<t:Interval>{int(rule.get('interval', 1))}</t:Interval>")
    if pattern in ("weekly", "relative_monthly", "relative_yearly"):
        parts.append(f"<t:DaysOfWeek>{' '.join(rule.get('weekdays', ['Monday']))}</t:DaysOfWeek>")
    if pattern in ("relative_monthly", "relative_yearly"):
        parts.append(f"<t:DayOfWeekIndex>{rule.get('week_index', 'First')}</t:DayOfWeekIndex>")
    if pattern in ("absolute_monthly", "absolute_yearly"):
        parts.append(f"<t:DayOfMonth>{int(rule.get('day_of_month', 1))}</t:DayOfMonth>")
    if pattern in ("absolute_yearly", "relative_yearly"):
        parts.append(f"<t:Month>{MONTHS[int(rule.get('month', 1)) - 1]}</t:Month>")
    tag = TAG_OF[pattern]
    start = escape(rule["start"].isoformat())
    if rule.get("end"):
        ending = (f"<t:EndDateRecurrence><t:StartDate>{start}</t:StartDate>"
                  f"<t:EndDate>{rule['end'].isoformat()}</t:EndDate></t:EndDateRecurrence>")  # fmt: skip
    elif rule.get("count"):
        ending = (f"<t:NumberedRecurrence><t:StartDate>{start}</t:StartDate><t:NumberOfOccurrences>"
                  f"{int(rule['count'])}</t:NumberOfOccurrences></t:NumberedRecurrence>")  # fmt: skip
    else:
        ending = f"<t:NoEndRecurrence><t:StartDate>{start}</t:StartDate></t:NoEndRecurrence>"
    return f"<t:Recurrence><t:{tag}>{''.join(parts)}</t:{tag}>{ending}</t:Recurrence>"
