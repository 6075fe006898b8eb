"""The simulator answers like Exchange where the product's correctness depends on it: change
paging above 512, unknown mailboxes, refused SyncFolderItems (all through exchangelib)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from ewssync.errors import ExchangeError
from ewssync.exchange import open_calendar
from ewssync.settings import SyncSettings
from tests.conftest import SHARED
from tests.integration.test_ewssim_wire import assert_schema_valid, record_responses

SOAP_BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"


def settings_for(sim, mailbox="alice@example.com") -> SyncSettings:
    conn = SimpleNamespace(
        conn_id="ews_sim", conn_type="ews", host=sim.url, login="alice@example.com",
        password="secret", description="", port=None, schema=None,  # noqa: S106
        extra=json.dumps({"app_user": "alice", "mailbox": mailbox, "timeout_seconds": 5}),
    )  # fmt: skip
    return SyncSettings.from_connection(conn)


def test_sync_changes_above_512_are_all_reported_when_items_changed_twice(sim):
    """The state after a full page must not skip items changed earlier than the page's latest
    change (1,000 items, 600 of them edited again: before the fix 600 were reported)."""
    mb = sim.mailbox("alice@example.com")
    start = datetime(2026, 11, 23, 6, tzinfo=UTC)
    ids = [
        mb.create(subject=f"Job {n}", start=start + timedelta(hours=n), end=start
                  + timedelta(hours=n, minutes=30))
        for n in range(1000)
    ]  # fmt: skip
    for item_id in ids[:600]:
        mb.update(item_id, subject="edited")
    calendar = open_calendar(settings_for(sim))
    state, changes, _ = calendar.sync_changes(None)
    assert len({c["item_id"] for c in changes}) == 1000
    assert sim.request_counts["SyncFolderItems"] == 2  # 512 + 488
    # and from that state, a later change is the only one reported
    mb.update(ids[999], subject="edited again")
    _, later, _ = calendar.sync_changes(state)
    assert [c["item_id"] for c in later] == [ids[999]]


def test_an_unknown_mailbox_is_an_error_not_the_signed_in_users_calendar(sim):
    sim.mailbox("alice@example.com").create(
        subject="Alice's", start=datetime(2026, 11, 26, 9, tzinfo=UTC),
        end=datetime(2026, 11, 26, 10, tzinfo=UTC),
    )  # fmt: skip
    calendar = open_calendar(settings_for(sim, mailbox="nobody@example.com"))
    with pytest.raises(ExchangeError, match="does not exist"):
        calendar.probe()
    with pytest.raises(ExchangeError, match="does not exist"):
        calendar.read_index(datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def test_sync_folder_items_refused_reads_as_no_permission(sim):
    sim.add_mailbox("dave@example.com", password="pw", calendar_access=False)
    calendar = open_calendar(settings_for(sim, mailbox="dave@example.com"))
    with pytest.raises(ExchangeError, match="no permission") as caught:
        calendar.sync_changes(None)
    assert "AttributeError" not in str(caught.value)


def test_the_error_answers_validate_against_the_ews_schema(sim):
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(SHARED / "ews-schema" / "messages.xsd"), validation="lax")
    sim.add_mailbox("dave@example.com", password="pw", calendar_access=False)
    responses = record_responses(sim)
    for mailbox in ("dave@example.com", "nobody@example.com"):
        calendar = open_calendar(settings_for(sim, mailbox=mailbox))
        for read in (
            calendar.probe,
            lambda c=calendar: c.sync_changes(None),
            lambda c=calendar: c.read_index(
                datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
            ),
        ):
            with pytest.raises(ExchangeError):
                read()
        calendar.fetch(["AAMk"])  # item ids name no mailbox: ErrorItemNotFound
    assert len(responses) >= 8
    assert_schema_valid(schema, responses)
