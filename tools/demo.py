"""`make demo`: a real sync from the built-in Exchange simulator into the local PostgreSQL.

Starts the simulator with the realistic fixture mailbox (shifted to this week), prepares the
calendar database, registers a demo `ews` connection, runs the generated DAG with
`airflow dags test`, prints what landed, and ends with a round trip: an appointment inserted in
Postgres appears in the mailbox, an edit made in the mailbox comes back.

``--api graph`` (``make demo API=graph``) does the same through Microsoft Graph: the Graph
simulator (tests/graphsim) with its identity platform, and a connection with api=graph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".demo"
SERVER_DSN = os.environ.get(
    "EWSSYNC_DEMO_SERVER_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DEMO_DB = os.environ.get("EWSSYNC_DEMO_DB", "ewssync_demo")
CONN_ID = "ews_demo"
MAILBOX, PASSWORD = "demo@example.com", "Demo-Kalender-2026"  # not a word logs contain
DEMO_EXTRA = {
    "app_user": "demo",
    "exchange_timezone": "Europe/Berlin",
    "weeks_back": 6,
    "weeks_ahead": 12,
}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def demo_dsn() -> str:
    parts = urlsplit(SERVER_DSN)
    return urlunsplit((parts.scheme, parts.netloc, f"/{DEMO_DB}", "", ""))


def prepare_database() -> str:
    try:
        admin = psycopg2.connect(SERVER_DSN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        sys.exit(
            f"make demo: no PostgreSQL answers at {SERVER_DSN} ({exc}).\n"
            "Start it (pg_ctlcluster 15 main start) or set EWSSYNC_DEMO_SERVER_DSN."
        )
    admin.autocommit = True
    with admin.cursor() as cur:
        # The simulator's mailbox is new on every run: so is the demo's calendar database.
        cur.execute(f'DROP DATABASE IF EXISTS "{DEMO_DB}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DEMO_DB}"')
    admin.close()
    from ewssync import store

    dsn = demo_dsn()
    applied = store.migrate(dsn)
    say(f"calendar database {DEMO_DB}: migrations applied now: {applied or 'none (current)'}")
    with store.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email, display_name) VALUES (%s, %s, %s) "
            "ON CONFLICT (login) DO NOTHING",
            ("demo", MAILBOX, "Demo Technician"),
        )
    return dsn


def start_graph_simulator() -> tuple[subprocess.Popen, dict]:
    """The Graph simulator and its identity platform, serving the same fixture mailbox."""
    seed = REPO / "tests" / "ewssim" / "fixtures" / "realistic.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.graphsim", "--seed", str(seed), "--user", MAILBOX,
         "--shift-to-today"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = process.stdout.readline().strip()
    try:
        started = json.loads(line)
    except ValueError:
        process.kill()
        sys.exit(f"make demo: the Graph simulator did not start (it printed {line!r})")
    say(f"Microsoft Graph simulator at {started['url']}, identity platform at "
        f"{started['authority']}, mailbox {MAILBOX}")  # fmt: skip
    return process, started


def graph_connection(started: dict) -> dict:
    """The demo connection through Graph: app-only OAuth against the simulators."""
    return {
        "conn_type": "ews",
        "description": "Demo technician's mailbox (Graph simulator)",
        "host": started["url"],
        "login": "",
        "password": started["secret"],
        "extra": {
            **DEMO_EXTRA, "api": "graph", "auth_method": "oauth", "mailbox": MAILBOX,
            "tenant_id": started["tenant_id"], "client_id": started["client_id"],
            "authority": started["authority"],
            "verify_tls": False,  # the simulators' throwaway certificate (test systems only)
        },
    }  # fmt: skip


def start_simulator() -> tuple[subprocess.Popen, str]:
    seed = REPO / "tests" / "ewssim" / "fixtures" / "realistic.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ewssim", "--port", "0", "--seed", str(seed),
         "--user", MAILBOX, "--password", PASSWORD, "--shift-to-today"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        sys.exit(f"make demo: the simulator did not start (it printed {url!r})")
    say(f"Exchange simulator (Exchange2016) at {url}, mailbox {MAILBOX}")
    return process, url


def airflow_env(url: str, dsn: str, connection: dict | None = None) -> dict[str, str]:
    home = STATE / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    connection = connection or {
        "conn_type": "ews",
        "description": "Demo technician's mailbox (simulator)",
        "host": url,
        "login": MAILBOX,
        "password": PASSWORD,
        "extra": DEMO_EXTRA,
    }
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "EWSSYNC_SQL_DIR": str(REPO / "include" / "sql"),
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
            "AIRFLOW_CONN_EWSSYNC_DB": dsn,
        }
    )
    return env


def airflow(env: dict[str, str], *args: str) -> None:
    binary = Path(sys.executable).parent / "airflow"
    subprocess.run([str(binary), *args], env=env, check=True)


def print_summary(dsn: str) -> None:
    from ewssync import store

    with store.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT start_date, count(*), string_agg(left(title, 28), ' | ' ORDER BY starts_at) "
            "FROM calendar.live_appointments GROUP BY 1 ORDER BY 1"
        )
        days = cur.fetchall()
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_private), "
            "count(*) FILTER (WHERE series_key IS NOT NULL), count(*) FILTER (WHERE all_day) "
            "FROM calendar.live_appointments"
        )
        total, private, recurring, all_day = cur.fetchone()
        cur.execute(
            "SELECT status, mode, counts, durations FROM ewssync.sync_runs ORDER BY id DESC LIMIT 1"
        )
        last_run = cur.fetchone()
    print("\nAppointments per day (calendar.live_appointments):")
    print(f"  {'day':<12} {'n':>3}  titles")
    for day, count, names in days:
        print(f"  {day!s:<12} {count:>3}  {names[:90]}")
    print(
        f"\n  total {total}, private {private}, recurring instances {recurring}, all-day {all_day}"
    )
    if last_run:
        status, mode, counts, durations = last_run
        print(f"\nLast run: {status} ({mode}); counts {counts}; seconds {durations}")


def demo_settings(env: dict[str, str]):
    """The demo connection's settings, to talk to the mailbox as Outlook would (over its API)."""
    from ewssync.settings import SyncSettings

    connection = json.loads(env[f"AIRFLOW_CONN_{CONN_ID.upper()}"])
    fields = {"conn_id": CONN_ID, "port": None, "schema": None, **connection}
    return SyncSettings.from_connection(type("Conn", (), fields)())


def round_trip(env: dict[str, str], dsn: str) -> None:
    """App -> Exchange -> app: insert an appointment in Postgres, sync, find it in the mailbox,
    edit it there (over EWS, as Outlook would), sync, show the edit in Postgres."""
    from datetime import UTC, datetime, timedelta

    from ewssync import store
    from ewssync.exchange import AppointmentWrite, ItemUpdate, open_calendar

    start = datetime.combine(
        datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC
    ) + timedelta(hours=13)
    with store.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.appointments (owner_user_id, title, location, notes, starts_at, "
            "ends_at, category) SELECT id, %s, %s, %s, %s, %s, %s FROM calendar.users "
            "WHERE login = 'demo' RETURNING id",
            ("Boiler service (booked in the app)", "Lindenweg 7", "Customer calls ahead",
             start, start + timedelta(hours=1, minutes=30), "Service"),
        )  # fmt: skip
        appointment_id = cur.fetchone()[0]
    say(f"round trip: inserted appointment {appointment_id} into calendar.appointments")
    airflow(env, "dags", "test", f"ewssync__{CONN_ID}")
    calendar = open_calendar(demo_settings(env))
    try:
        found = calendar.find_stamped([str(appointment_id)])
        if str(appointment_id) not in found:
            sys.exit("make demo: the appointment did not reach the simulator's mailbox")
        item = found[str(appointment_id)]
        (record,), _ = calendar.fetch([item.item_id])
        say(
            f"round trip: in the mailbox: {record['subject']!r} {record['start']:%a %H:%M} UTC, "
            f"{record['location']!r}, categories {record['categories']}"
        )
        edited = AppointmentWrite(
            stamp=str(appointment_id), subject="Boiler service (moved by phone)",
            start=record["start"] + timedelta(hours=2), end=record["end"] + timedelta(hours=2),
            time_zone=record["timezone_iana"] or "Europe/Berlin",
        )  # fmt: skip
        (result,) = calendar.update_items(
            [ItemUpdate(item.item_id, item.change_key, edited, ("subject", "start", "end"))]
        )
        if not result.ok:
            sys.exit(f"make demo: editing the item in the mailbox failed: {result.message}")
        say("round trip: edited it in the mailbox (subject, moved by two hours), as Outlook would")
    finally:
        calendar.close()
    airflow(env, "dags", "test", f"ewssync__{CONN_ID}")
    with store.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT title, starts_at FROM calendar.appointments WHERE id = %s", (appointment_id,)
        )
        title, starts_at = cur.fetchone()
    say(f"round trip: back in calendar.appointments: {title!r} {starts_at:%a %H:%M} UTC")
    if title != "Boiler service (moved by phone)":
        sys.exit("make demo: the edit made in the mailbox did not come back")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", choices=["ews", "graph"], default="ews")
    args = parser.parse_args(argv)
    STATE.mkdir(exist_ok=True)
    dsn = prepare_database()
    if args.api == "graph":
        simulator, started = start_graph_simulator()
        url, connection = started["url"], graph_connection(started)
    else:
        simulator, url = start_simulator()
        connection = None
    try:
        env = airflow_env(url, dsn, connection)
        say("Airflow metadata database (sqlite in .demo/airflow)")
        airflow(env, "db", "migrate")
        say(f"airflow dags test ewssync__{CONN_ID}")
        started = time.monotonic()
        airflow(env, "dags", "test", f"ewssync__{CONN_ID}")
        say(f"sync finished in {time.monotonic() - started:.1f} s")
        print_summary(dsn)
        round_trip(env, dsn)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    print(
        "\nTo browse the same setup in the Airflow UI (a real Airflow with a Celery worker on "
        "free ports, using this demo's calendar database, the same simulator mailbox and the "
        f"connection {CONN_ID}):\n"
        "  make up DEMO=1      # prints the UI's URL, user and password; writes .up/env.sh\n"
        "  make down           # stops it (the demo's calendar database is kept)"
    )


if __name__ == "__main__":
    main()
