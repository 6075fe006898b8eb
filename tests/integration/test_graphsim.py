"""The Graph simulator over real HTTP: delta, paging, preferences, $select, errors and throttling
as Microsoft documents them, every JSON answer checked against Graph's own CSDL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from tests.conftest import REPO
from tests.ewssim import EwsSimulator
from tests.graphsim import GraphSimulator, csdl
from tests.graphsim.events import STAMP_KEY, STAMP_PROPERTY_ID
from tests.identitysim import IdentitySimulator
from tests.identitysim.server import GRAPH

FIXTURE = REPO / "tests" / "ewssim" / "fixtures" / "realistic.json"
MAILBOX = "alice@example.com"


@pytest.fixture
def idp():
    with IdentitySimulator(tls=True) as identity:
        yield identity


@pytest.fixture
def graph(idp):
    ews = EwsSimulator()
    ews.add_mailbox(MAILBOX, password="x")
    ews.load_fixture(FIXTURE, shift_to=date.today(), default_mailbox=MAILBOX)
    sim = GraphSimulator(source=ews)
    sim.trust(idp)
    answers = sim.record_answers()
    with sim:
        yield sim
    # every answer the test saw, whatever it asserted: valid against Microsoft's CSDL
    assert answers
    for path, _status, document in answers:
        try:
            csdl.validate_answer(document, _entity_type(path))
        except csdl.SchemaViolation as exc:
            raise AssertionError(f"{path}: {exc}") from None


def _entity_type(path: str) -> str:
    if path.endswith("/calendar"):
        return "graph.calendar"
    return "graph.event"


def client(idp, graph, roles=("Calendars.ReadWrite",)) -> requests.Session:
    app = idp.add_app(roles={GRAPH: list(roles)} if roles else {})
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {idp.issue(app, GRAPH)}"
    session.app = app
    return session


def window() -> tuple[str, str]:
    today = datetime.combine(date.today(), datetime.min.time(), tzinfo=UTC)
    start, end = today - timedelta(weeks=4), today + timedelta(weeks=26)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def delta_url(graph) -> str:
    start, end = window()
    return (
        f"{graph.url}/v1.0/users/{MAILBOX}/calendarView/delta"
        f"?startDateTime={start}&endDateTime={end}"
    )


def drain(session, url, **headers) -> tuple[list[dict], str, int]:
    """Follow nextLinks to the deltaLink: (entries, deltaLink, pages)."""
    entries, pages = [], 0
    while True:
        answer = session.get(url, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        document = answer.json()
        entries.extend(document["value"])
        pages += 1
        if "@odata.nextLink" in document:
            url = document["@odata.nextLink"]
            continue
        return entries, document["@odata.deltaLink"], pages


# --- the schema validator itself ------------------------------------------------------------


def test_validator_rejects_what_the_schema_rejects():
    schema = csdl.load()
    good = {"id": "x", "subject": "s", "type": "occurrence", "showAs": "busy",
            "start": {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "UTC"},
            "categories": ["a"], "reminderMinutesBeforeStart": 15}  # fmt: skip
    schema.validate(good, "graph.event")
    cases = [
        ({**good, "subjekt": "s"}, "no property 'subjekt'"),
        ({**good, "type": "Occurrence"}, "not a member of graph.eventType"),
        ({**good, "showAs": "away"}, "not a member of graph.freeBusyStatus"),
        ({**good, "reminderMinutesBeforeStart": "15"}, "Edm.Int32"),
        ({**good, "reminderMinutesBeforeStart": True}, "Edm.Int32"),
        ({**good, "isAllDay": "false"}, "Edm.Boolean"),
        ({**good, "categories": "a"}, "JSON array"),
        ({**good, "start": {"timeZone": "UTC"}}, "dateTime is required"),
        ({**good, "start": {"dateTime": None, "timeZone": "UTC"}}, "not nullable"),
        ({**good, "originalStart": "2026-11-23 09:00"}, "Edm.DateTimeOffset"),
        ({**good, "cancelledOccurrences": None}, "not nullable"),
        ({**good, "responseStatus": {"response": "accept"}}, "graph.responseType"),
        ({**good, "location": {"displayName": 3}}, "Edm.String"),
    ]
    for document, says in cases:
        with pytest.raises(csdl.SchemaViolation, match=says):
            schema.validate(document, "graph.event")
    with pytest.raises(csdl.SchemaViolation, match="error"):
        csdl.validate_error({"error": {"message": "no code"}})
    with pytest.raises(csdl.SchemaViolation, match="@removed"):
        csdl.validate_answer({"value": [{"id": "x", "@removed": {"reason": "gone"}}]})


# --- reading ----------------------------------------------------------------------------------


def test_delta_pages_then_reports_changes_and_removals(idp, graph):
    session = client(idp, graph)
    entries, delta_link, pages = drain(session, delta_url(graph), Prefer="odata.maxpagesize=7")
    mailbox = graph.mailbox(MAILBOX)
    today = datetime.combine(date.today(), datetime.min.time(), tzinfo=UTC)
    expected = mailbox.occurrences(today - timedelta(weeks=4), today + timedelta(weeks=26))
    assert len(entries) == len(expected) > 7
    assert pages == -(-len(expected) // 7)
    assert {e["type"] for e in entries} >= {"singleInstance", "occurrence", "exception"}
    occurrence = next(e for e in entries if e["type"] == "occurrence")
    assert occurrence["seriesMasterId"] and occurrence["originalStart"].endswith("Z")

    # nothing changed: an empty page and a new deltaLink
    again, delta_link, _ = drain(session, delta_link)
    assert again == []

    single = next(i for i in mailbox.items() if not i.recurrence and i.start > today)
    mailbox.update(single.item_id, subject="Geändert")
    series = next(i for i in mailbox.items() if i.recurrence)
    mailbox.delete(series.item_id)
    changes, _, _ = drain(session, delta_link)
    changed = [c for c in changes if "@removed" not in c]
    removed = [c for c in changes if "@removed" in c]
    assert [c["subject"] for c in changed] == ["Geändert"]
    assert removed and all(c["@removed"] == {"reason": "deleted"} for c in removed)


def test_expired_or_unknown_delta_token_is_410_sync_state_not_found(idp, graph):
    session = client(idp, graph)
    _, delta_link, _ = drain(session, delta_url(graph))
    graph.expire_delta_tokens()
    answer = session.get(delta_link, timeout=10)
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "syncStateNotFound"
    forged = delta_link.split("$deltatoken=")[0] + "$deltatoken=made-up"
    assert session.get(forged, timeout=10).status_code == 410


def test_preferences_and_select(idp, graph):
    session = client(idp, graph)
    start, end = window()
    url = (
        f"{graph.url}/v1.0/users/{MAILBOX}/calendarView?startDateTime={start}&endDateTime={end}"
        "&$select=subject,start,end,body,isAllDay,originalStartTimeZone"
    )
    answer = session.get(
        url,
        headers={
            "Prefer": 'outlook.timezone="W. Europe Standard Time", outlook.body-content-type="text"'
        },  # fmt: skip
        timeout=10,
    )
    assert answer.status_code == 200
    assert "outlook.timezone" in answer.headers["Preference-Applied"]
    events = answer.json()["value"]
    assert all(set(e) <= {"@odata.etag", "id", "subject", "start", "end", "body", "isAllDay",
                          "originalStartTimeZone"} for e in events)  # fmt: skip
    timed = next(
        e for e in events if not e["isAllDay"] and "Standard" in e["originalStartTimeZone"]
    )
    assert timed["start"]["timeZone"] == "W. Europe Standard Time"
    assert all(
        e["body"]["contentType"] == "text" and "<" not in e["body"]["content"] for e in events
    )
    # in UTC, the wall-clock time moves by Berlin's offset
    utc_events = session.get(url, timeout=10).json()["value"]
    same = next(e for e in utc_events if e["id"] == timed["id"])
    berlin = datetime.fromisoformat(timed["start"]["dateTime"][:19])
    in_utc = datetime.fromisoformat(same["start"]["dateTime"][:19])
    assert berlin - in_utc in (timedelta(hours=1), timedelta(hours=2))
    assert same["body"]["contentType"] == "html"
    # an all-day event is the same dates whatever the preferred zone
    all_day = [e for e in events if e["isAllDay"]]
    assert all_day and all(e["start"]["dateTime"].endswith("T00:00:00.0000000") for e in all_day)
    bad = session.get(url.replace("subject,", "subjekt,"), timeout=10)
    assert bad.status_code == 400 and "subjekt" in bad.json()["error"]["message"]


def test_event_by_id_with_the_stamp_expanded(idp, graph):
    session = client(idp, graph)
    mailbox = graph.mailbox(MAILBOX)
    item = next(i for i in mailbox.items() if not i.recurrence)
    mailbox.update(item.item_id, extended={STAMP_KEY: "appt-42"})
    from tests.graphsim.events import graph_id

    url = (
        f"{graph.url}/v1.0/users/{MAILBOX}/events/{graph_id(item.item_id)}"
        f"?$expand=singleValueExtendedProperties($filter=id eq '{STAMP_PROPERTY_ID}')"
    )
    event = session.get(url, timeout=10).json()
    assert event["singleValueExtendedProperties"] == [{"id": STAMP_PROPERTY_ID, "value": "appt-42"}]
    missing = session.get(f"{graph.url}/v1.0/users/{MAILBOX}/events/AAMkAGnope", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"


# --- refusals ----------------------------------------------------------------------------------


def test_refusals_as_graph_gives_them(idp, graph):
    calendar = f"{graph.url}/v1.0/users/{MAILBOX}/calendar"
    no_token = requests.get(calendar, timeout=10)
    assert (no_token.status_code, no_token.json()["error"]["code"]) == (
        401, "InvalidAuthenticationToken")  # fmt: skip

    no_consent = client(idp, graph, roles=())
    answer = no_consent.get(calendar, timeout=10)
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "ErrorAccessDenied")

    read_only = client(idp, graph, roles=("Calendars.Read",))
    assert read_only.get(calendar, timeout=10).status_code == 200
    write = read_only.delete(f"{graph.url}/v1.0/users/{MAILBOX}/events/x", timeout=10)
    assert write.status_code == 403

    session = client(idp, graph)
    graph.restrict_app(session.app.client_id, ["bob@example.com"])
    denied = session.get(calendar, timeout=10)
    assert denied.status_code == 403 and "AccessPolicy" in denied.json()["error"]["message"]

    other = client(idp, graph)
    nobody = other.get(f"{graph.url}/v1.0/users/nobody@example.com/calendar", timeout=10)
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (404, "ErrorInvalidUser")

    app = idp.add_app(roles={GRAPH: ["Calendars.ReadWrite"]})
    expired = requests.get(
        calendar, headers={"Authorization": f"Bearer {idp.issue(app, GRAPH, lifetime=-60)}"},
        timeout=10,
    )  # fmt: skip
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    wrong = requests.get(
        calendar,
        headers={"Authorization": f"Bearer {idp.issue(app, 'https://outlook.office365.com')}"},
        timeout=10,
    )
    assert wrong.status_code == 401 and "audience" in wrong.json()["error"]["message"]


def test_throttling_answers_with_retry_after(idp, graph):
    session = client(idp, graph)
    graph.inject_fault("throttle429", route="delta", retry_after=3)
    graph.inject_fault("http503", route="delta", retry_after=2)
    first = session.get(delta_url(graph), timeout=10)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert first.json()["error"]["code"] == "ApplicationThrottled"
    second = session.get(delta_url(graph), timeout=10)
    assert (second.status_code, second.headers["Retry-After"]) == (503, "2")
    assert session.get(delta_url(graph), timeout=10).status_code == 200


def test_batch_answers_each_request(idp, graph):
    session = client(idp, graph)
    mailbox = graph.mailbox(MAILBOX)
    from tests.graphsim.events import graph_id

    ids = [graph_id(i.item_id) for i in mailbox.items()[:3]] + ["AAMkAGnope"]
    body = {"requests": [{"id": str(n), "method": "GET", "url": f"/users/{MAILBOX}/events/{i}"}
                         for n, i in enumerate(ids)]}  # fmt: skip
    answer = session.post(f"{graph.url}/v1.0/$batch", json=body, timeout=10)
    assert answer.status_code == 200
    statuses = {r["id"]: r["status"] for r in answer.json()["responses"]}
    assert statuses == {"0": 200, "1": 200, "2": 200, "3": 404}
    for response in answer.json()["responses"]:
        csdl.validate_answer(response["body"])
    too_many = {"requests": body["requests"] * 6}
    assert session.post(f"{graph.url}/v1.0/$batch", json=too_many, timeout=10).status_code == 400
