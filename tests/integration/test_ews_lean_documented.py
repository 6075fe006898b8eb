"""The lean reading (ews_lean) against Microsoft's documented example answers (issue #14):
every <t:CalendarItem> of the GetItem and FindItem examples reads into the same record and index
entry as exchangelib's object, and into the same id, change key and type as a SyncFolderItems
change; served over HTTP by the simulator in place of its own, the documented GetItem answers give
the same records (fetch) and the documented SyncFolderItems answers the same changes
(sync_changes) both ways, in both dialects.

The answers are in documented_answers/ (README.md there names each one's page and commit), as the
docs show them; every body is valid against Microsoft's schema (checked here too)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from exchangelib import CalendarItem
from lxml import etree

from ewssync.errors import SyncStateExpired
from ewssync.exchange import open_calendar
from ewssync.exchange.ews_lean import LeanChange, Reader
from tests.ewssim import EwsSimulator
from tests.integration.test_ewssim_wire import assert_schema_valid, schema  # noqa: F401 (fixture)
from tests.integration.test_exchange import settings_for

ANSWERS = Path(__file__).resolve().parent / "documented_answers"
DIALECTS = ["Exchange2016", "Exchange2007_SP1"]
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS = {
    "s": SOAP,
    "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
    "t": "http://schemas.microsoft.com/exchange/services/2006/types",
}
# the items of an answer, not the ones nested in them (ConflictingMeetings, AdjacentMeetings)
ITEMS = (
    "s:Body/m:GetItemResponse/m:ResponseMessages/m:GetItemResponseMessage/m:Items/t:CalendarItem"
    " | s:Body/m:FindItemResponse/m:ResponseMessages/m:FindItemResponseMessage/m:RootFolder"
    "/t:Items/t:CalendarItem"
)
CHANGES = (
    "s:Body/m:SyncFolderItemsResponse/m:ResponseMessages/m:SyncFolderItemsResponseMessage"
    "/m:Changes/*"
)


def answer(path: Path) -> bytes:
    """The documented answer as a server sends it: the pages of learn.microsoft.com's
    exchange-web-services section write the SOAP 1.1 envelope's namespace with https:// (a
    rewrite of the docs, not the protocol's http:// name, which the reference pages and every
    server use); nothing else is changed."""
    return path.read_bytes().replace(
        b'"https://schemas.xmlsoap.org/soap/envelope/"', f'"{SOAP}"'.encode()
    )


def xpath(path: Path, query: str) -> list:
    return etree.fromstring(answer(path)).xpath(query, namespaces=NS)


DOCUMENTED = sorted(ANSWERS.glob("*.xml"))
WITH_ITEMS = [path for path in DOCUMENTED if xpath(path, ITEMS)]
SYNC = [path for path in DOCUMENTED if xpath(path, "s:Body/m:SyncFolderItemsResponse")]


def test_the_documented_answers_are_all_here_and_schema_valid(schema):  # noqa: F811
    assert len(DOCUMENTED) == 17
    assert {path.name for path in DOCUMENTED} == {path.name for path in [*WITH_ITEMS, *SYNC]}
    assert sum(len(xpath(path, ITEMS)) for path in WITH_ITEMS) == 23
    readme = (ANSWERS / "README.md").read_text()
    assert all(path.name in readme for path in DOCUMENTED)
    assert assert_schema_valid(schema, [answer(path) for path in DOCUMENTED]) == {
        "GetItemResponse",
        "FindItemResponse",
        "SyncFolderItemsResponse",
    }


@pytest.fixture(scope="module", params=DIALECTS)
def calendar(request):
    """A calendar of the simulator's alice (Europe/Berlin), signed in (its account knows the
    server's version: Exchange 2007 items name their MeetingTimeZone, later ones StartTimeZone)."""
    sim = EwsSimulator(dialect=request.param)
    sim.add_mailbox("alice@example.com", password="secret")
    sim.start()
    try:
        settings = settings_for(
            sim, use_2007_protocol=request.param == "Exchange2007_SP1",
            exchange_timezone="Europe/Berlin", lean_parser=False,
        )  # fmt: skip
        calendar = open_calendar(settings)
        window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
        assert calendar.read_index(*window) == []  # signed in
    finally:
        sim.stop()
    return calendar


def outcome(read):
    """The value, or the kind of failure."""
    try:
        return read()
    except Exception as exc:
        return type(exc)


def both(calendar, elem):
    """(exchangelib's item, the lean item) of one documented element."""
    ours = CalendarItem.from_xml(elem=copy.deepcopy(elem), account=calendar.account)
    lean = Reader(calendar.account).item(copy.deepcopy(elem))
    return ours, lean


@pytest.mark.parametrize("path", WITH_ITEMS, ids=lambda path: path.stem)
def test_documented_calendar_items_read_the_same_both_ways(calendar, path):
    for elem in xpath(path, ITEMS):
        ours, lean = both(calendar, elem)
        record = outcome(lambda ours=ours: calendar._record(ours))
        assert outcome(lambda lean=lean: calendar._record(lean)) == record, etree.tostring(elem)
        entry = outcome(lambda ours=ours: calendar._index_entry(ours))
        assert outcome(lambda lean=lean: calendar._index_entry(lean)) == entry
        # each documented item is a record with the documented id, never a failure
        assert isinstance(record, dict), (record, etree.tostring(elem)[:300])
        assert record["item_id"] == elem.find("t:ItemId", NS).get("Id")
        assert record["subject"] == elem.findtext("t:Subject", namespaces=NS)
        start = elem.findtext("t:Start", namespaces=NS)
        assert entry["start"] == (
            datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None
        )


@pytest.mark.parametrize("path", WITH_ITEMS, ids=lambda path: path.stem)
def test_documented_calendar_items_as_changes_read_the_same_both_ways(calendar, path):
    """No documented SyncFolderItems answer carries a calendar item (their changes are messages
    and a meeting request), so each documented <t:CalendarItem> is read as one: LeanChange reads
    the same id, change key, type and last-modified time as exchangelib's CalendarItem (what its SyncFolderItems
    builds for a <t:Create> or <t:Update> of one)."""
    for elem in xpath(path, ITEMS):
        ours = CalendarItem.from_xml(elem=copy.deepcopy(elem), account=calendar.account)
        lean = LeanChange(copy.deepcopy(elem), Reader(calendar.account))
        assert (lean.id, lean.changekey, lean.type, lean.last_modified_time) == (
            ours.id,
            ours.changekey,
            ours.type,
            ours.last_modified_time,
        )
        assert lean.id == elem.find("t:ItemId", NS).get("Id")
        assert lean.type == elem.findtext("t:CalendarItemType", namespaces=NS)


# --- the documented SyncFolderItems answers, served over HTTP -----------------------------------


def served(dialect: str, path: Path, lean: bool, operation: str, read):
    """``read(calendar)`` of a calendar whose ``operation`` requests the simulator answers with
    the documented answer (the rest as usual); the outcome, and the requests answered so."""
    sim = EwsSimulator(dialect=dialect)
    sim.add_mailbox("alice@example.com", password="secret")
    served = []
    serve = sim.handle

    def documented(auth, body):
        if f"{operation}>".encode() in body or f"{operation} ".encode() in body:
            served.append(body)
            return 200, answer(path)
        return serve(auth, body)

    sim.handle = documented
    sim.start()
    try:
        settings = settings_for(
            sim, use_2007_protocol=dialect == "Exchange2007_SP1",
            exchange_timezone="Europe/Berlin", lean_parser=lean,
        )  # fmt: skip
        return outcome(lambda: read(open_calendar(settings))), len(served)
    finally:
        sim.stop()


def served_changes(dialect: str, path: Path, lean: bool):
    """sync_changes(None) with the documented SyncFolderItems answer."""
    return served(dialect, path, lean, "SyncFolderItems", lambda c: c.sync_changes(None))


def change_id(change):
    """The ItemId of a change: its own (Delete, ReadFlagChange) or its item's (Create, Update)."""
    own = change.find("t:ItemId", NS)
    return own if own is not None else change.find("*/t:ItemId", NS)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("path", SYNC, ids=lambda path: path.stem)
def test_documented_sync_answers_read_the_same_both_ways(dialect, path):
    ours, asked = served_changes(dialect, path, lean=False)
    assert served_changes(dialect, path, lean=True) == (ours, asked) == (ours, 1)
    if xpath(path, "//m:ResponseCode[text()='ErrorInvalidSyncStateData']"):
        assert ours is SyncStateExpired
        return
    state, changes, complete = ours
    documented = [
        (etree.QName(change).localname.lower(), change_id(change))
        for change in xpath(path, CHANGES)
    ]
    assert state == xpath(path, "//m:SyncState")[0].text and complete
    assert [(c["kind"], c["item_id"], c["change_key"]) for c in changes] == [
        (kind, item_id.get("Id"), item_id.get("ChangeKey"))
        for kind, item_id in documented
        if kind != "readflagchange"  # a read flag changes no content
    ]
    assert {c["item_type"] for c in changes} == {None}  # messages and a meeting request


# --- the documented GetItem answers, served over HTTP -------------------------------------------

GET_ITEM = [path for path in WITH_ITEMS if xpath(path, "s:Body/m:GetItemResponse")]


def served_records(dialect: str, path: Path, lean: bool):
    """fetch() of the documented items' ids with the documented GetItem answer."""
    ids = [elem.find("t:ItemId", NS).get("Id") for elem in xpath(path, ITEMS)]
    return served(dialect, path, lean, "GetItem", lambda c: c.fetch(ids))


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("path", GET_ITEM, ids=lambda path: path.stem)
def test_documented_get_item_answers_read_the_same_both_ways(dialect, path):
    ours, asked = served_records(dialect, path, lean=False)
    assert served_records(dialect, path, lean=True) == (ours, asked) == (ours, 1)
    records, missing = ours
    assert missing == []
    assert [r["item_id"] for r in records] == [
        elem.find("t:ItemId", NS).get("Id") for elem in xpath(path, ITEMS)
    ]
