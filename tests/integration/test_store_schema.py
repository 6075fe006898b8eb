"""The calendar and ewssync schemas against a real PostgreSQL: migrations, constraints, triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from ewssync import store


def _add_user(cur, login="alice") -> int:
    cur.execute(
        "INSERT INTO calendar.users (login, email) VALUES (%s, %s) RETURNING id",
        (login, f"{login}@example.com"),
    )
    return cur.fetchone()[0]


def _add_appointment(cur, user_id: int, title="Visit") -> int:
    start = datetime(2026, 11, 23, 9, tzinfo=UTC)
    cur.execute(
        "INSERT INTO calendar.appointments (owner_user_id, title, starts_at, ends_at) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (user_id, title, start, start + timedelta(hours=1)),
    )
    return cur.fetchone()[0]


def _schema_snapshot(dsn: str) -> list[tuple]:
    with store.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema IN ('calendar', 'ewssync') ORDER BY 1, 2, 3"
        )
        columns = cur.fetchall()
        cur.execute("SELECT count(*) FROM ewssync._yoyo_migration")
        return [*columns, ("applied", cur.fetchone()[0])]


def test_migrations_apply_once_and_a_second_run_is_a_no_op(empty_db):
    applied = store.migrate(empty_db)
    # every migration in include/sql/migrations, in order (helpers add their own numbers)
    on_disk = sorted(p.stem for p in (store.sql_dir() / "migrations").glob("*.sql"))
    assert applied == on_disk and applied[:3] == [
        "0001_calendar",
        "0002_ewssync",
        "0003_reliability",
    ]
    assert "0004_twoway" in applied
    before = _schema_snapshot(empty_db)
    assert ("calendar", "appointments", "version", "bigint") in before
    assert store.migrate(empty_db) == []
    assert _schema_snapshot(empty_db) == before


def test_a_migration_behind_an_app_transaction_gives_up_and_applies_nothing(
    empty_db, tmp_path, monkeypatch
):
    """A migration's DDL waiting behind an open app transaction times out (lock_timeout) with a
    clear error instead of waiting forever; nothing of it is applied; a retry applies it."""
    import shutil

    store.migrate(empty_db)
    sql = tmp_path / "sql"
    shutil.copytree(store.sql_dir(), sql)
    (sql / "migrations" / "9999_test_column.sql").write_text(
        "ALTER TABLE calendar.appointments ADD COLUMN test_only integer;\n"
    )
    monkeypatch.setenv("EWSSYNC_SQL_DIR", str(sql))
    before = _schema_snapshot(empty_db)
    app = psycopg2.connect(empty_db)
    try:
        with app.cursor() as cur:  # the app reads the table in a transaction it keeps open
            cur.execute("SELECT count(*) FROM calendar.appointments")
        with pytest.raises(store.StoreError, match=r"migrating .*waited 0.5 s .*lock_timeout"):
            store.migrate(empty_db, lock_timeout=0.5)
        assert _schema_snapshot(empty_db) == before
    finally:
        app.rollback()
        app.close()
    assert store.migrate(empty_db, lock_timeout=0.5) == ["9999_test_column"]


def test_a_duplicate_link_is_rejected(db):
    with db.cursor() as cur:
        user = _add_user(cur)
        first, second = _add_appointment(cur, user), _add_appointment(cur, user)
        insert = (
            "INSERT INTO ewssync.links (conn_id, appointment_id, ews_item_id, uid, recurrence_id) "
            "VALUES (%s, %s, %s, %s, %s)"
        )
        cur.execute(insert, ("c1", first, "AAA", "uid-1", None))
        cur.execute("SAVEPOINT s")
        with pytest.raises(psycopg2.errors.UniqueViolation, match="links_one_per_item"):
            cur.execute(insert, ("c1", second, "AAA", "uid-2", None))
        cur.execute("ROLLBACK TO SAVEPOINT s")
        # Another connection may link the same EWS item id.
        cur.execute(insert, ("c2", second, "AAA", "uid-1", None))
        # A UID is a hint, not an identity: copied meetings share one, some items have none.
        third, fourth = _add_appointment(cur, user), _add_appointment(cur, user)
        cur.execute(insert, ("c1", third, "BBB", "uid-1", None))
        cur.execute(insert, ("c1", fourth, "CCC", None, None))
        cur.execute(insert, ("c1", second, "DDD", None, None))


def test_updating_an_appointment_bumps_its_change_version(db):
    with db.cursor() as cur:
        appointment = _add_appointment(cur, _add_user(cur))
        cur.execute(
            "SELECT version, updated_at FROM calendar.appointments WHERE id = %s", (appointment,)
        )
        version, _ = cur.fetchone()
        db.commit()
        cur.execute(
            "UPDATE calendar.appointments SET title = 'Moved' WHERE id = %s", (appointment,)
        )
        db.commit()
        cur.execute(
            "SELECT version, updated_at > created_at FROM calendar.appointments WHERE id = %s",
            (appointment,),
        )
        new_version, touched = cur.fetchone()
    assert new_version > version
    assert touched


def test_deleting_an_appointment_leaves_a_tombstone_with_a_new_version(db):
    with db.cursor() as cur:
        user = _add_user(cur)
        appointment = _add_appointment(cur, user)
        cur.execute("SELECT version FROM calendar.appointments WHERE id = %s", (appointment,))
        version = cur.fetchone()[0]
        cur.execute("DELETE FROM calendar.appointments WHERE id = %s", (appointment,))
        cur.execute(
            "SELECT deleted_at IS NOT NULL, version FROM calendar.appointments WHERE id = %s",
            (appointment,),
        )
        tombstone, new_version = cur.fetchone()
        cur.execute("SELECT count(*) FROM calendar.live_appointments")
        live = cur.fetchone()[0]
        # A purge is explicit and really removes the row.
        cur.execute("SET LOCAL calendar.allow_purge = 'on'")
        cur.execute("DELETE FROM calendar.appointments WHERE id = %s", (appointment,))
        cur.execute("SELECT count(*) FROM calendar.appointments")
        remaining = cur.fetchone()[0]
    assert tombstone and new_version > version
    assert live == 0
    assert remaining == 0


def test_every_named_query_is_present_and_parameterised():
    names = store.queries()
    for needed in ("merge_insert", "merge_update", "merge_delete", "save_sync_state", "find_user"):
        assert needed in names
    assert not any("{" in body for body in names.values())  # no str.format placeholders


def test_every_foreign_key_has_an_index_that_starts_with_its_columns(db):
    """Deleting a referenced row looks up its referencing rows by the foreign key's columns: an
    unindexed key makes a purge of n appointments scan the links n times (quadratic)."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT c.conrelid::regclass::text, c.conname
            FROM pg_constraint c
            JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE c.contype = 'f' AND n.nspname IN ('calendar', 'ewssync')
              AND NOT EXISTS (
                SELECT 1 FROM pg_index i
                WHERE i.indrelid = c.conrelid
                  AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] = c.conkey)
            """
        )
        unindexed = cur.fetchall()
    assert unindexed == []
