-- Set-based statements the store runs, one per "-- name:" section, parameterised (%(name)s).

-- name: find_user
SELECT id, login, email, display_name FROM calendar.users WHERE login = %(login)s;

-- name: begin_run
INSERT INTO ewssync.sync_runs (conn_id, run_key, status)
VALUES (%(conn_id)s, %(run_key)s, 'running')
ON CONFLICT (conn_id, run_key) DO UPDATE
    SET status = 'running', finished_at = NULL, started_at = now()
RETURNING id;

-- name: add_to_run
UPDATE ewssync.sync_runs
   SET counts    = counts || %(counts)s::jsonb,
       durations = durations || %(durations)s::jsonb,
       mode      = coalesce(%(mode)s, mode)
 WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: finish_run
UPDATE ewssync.sync_runs
   SET status = %(status)s, finished_at = now(),
       errors = errors || %(errors)s::jsonb
 WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s
RETURNING conn_id, run_key, status, mode, counts, errors, durations, started_at, finished_at;

-- name: record_failure
INSERT INTO ewssync.sync_runs (conn_id, run_key, status, errors, finished_at)
VALUES (%(conn_id)s, %(run_key)s, %(status)s, jsonb_build_array(%(error)s::text), now())
ON CONFLICT (conn_id, run_key) DO UPDATE
   SET status = EXCLUDED.status, finished_at = now(),
       errors = ewssync.sync_runs.errors || EXCLUDED.errors;

-- name: get_sync_state
SELECT conn_id, ews_sync_state, window_start, window_end, last_pushed_version, last_full_sync_at
  FROM ewssync.sync_state WHERE conn_id = %(conn_id)s;

-- name: links_in_window
-- What Exchange had inside [window_start, window_end) at the last sync, by item id. Series
-- masters (linked to app series) never show in a view: their occurrences do.
SELECT ews_item_id, change_key, item_type, master_item_id, uid, starts_at, ends_at
  FROM ewssync.links
 WHERE conn_id = %(conn_id)s
   AND starts_at < %(window_end)s AND ends_at > %(window_start)s
   AND item_type <> 'RecurringMaster';

-- name: links_by_item
SELECT ews_item_id, change_key, item_type, master_item_id, starts_at, ends_at
  FROM ewssync.links
 WHERE conn_id = %(conn_id)s AND ews_item_id = ANY(%(item_ids)s);

-- name: count_links
SELECT count(*) FROM ewssync.links WHERE conn_id = %(conn_id)s;

-- name: clear_staging
-- One run's staging: another run of the same connection (or another connection on the same
-- mailbox with the same Airflow run id) is never touched.
DELETE FROM ewssync.staging_ews_items WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;
DELETE FROM ewssync.staging_appointments WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;
DELETE FROM ewssync.staging_seen WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;
DELETE FROM ewssync.staging_runs WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: clear_other_staging
-- What runs of this connection other than the lease holder left behind (failed or killed runs).
DELETE FROM ewssync.staging_ews_items WHERE conn_id = %(conn_id)s AND run_key <> %(run_key)s;
DELETE FROM ewssync.staging_appointments WHERE conn_id = %(conn_id)s AND run_key <> %(run_key)s;
DELETE FROM ewssync.staging_seen WHERE conn_id = %(conn_id)s AND run_key <> %(run_key)s;
DELETE FROM ewssync.staging_runs WHERE conn_id = %(conn_id)s AND run_key <> %(run_key)s;

-- name: lock_connection
-- Serialises the steps of a connection's runs: held until the caller's transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended('ewssync:' || %(conn_id)s, 0));

-- name: take_lease
-- The connection's lease for this run: free, already ours, or its holder is no longer running
-- (finished, failed, or silent for longer than a run may take).
INSERT INTO ewssync.run_lease AS l (conn_id, run_key)
VALUES (%(conn_id)s, %(run_key)s)
ON CONFLICT (conn_id) DO UPDATE
   SET run_key = EXCLUDED.run_key,
       taken_at = CASE WHEN l.run_key = EXCLUDED.run_key THEN l.taken_at ELSE now() END,
       touched_at = now()
 WHERE l.run_key = EXCLUDED.run_key
    OR l.touched_at < now() - make_interval(secs => %(stale_after_seconds)s)
    OR NOT EXISTS (SELECT 1 FROM ewssync.sync_runs r
                    WHERE r.conn_id = l.conn_id AND r.run_key = l.run_key
                      AND r.status = 'running')
RETURNING run_key;

-- name: reopen_run
-- A run that failed and was cleared to go again is running again.
UPDATE ewssync.sync_runs SET status = 'running', finished_at = NULL
 WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s AND status <> 'running';

-- name: lease_holder
SELECT run_key, taken_at, touched_at FROM ewssync.run_lease WHERE conn_id = %(conn_id)s;

-- name: release_lease
DELETE FROM ewssync.run_lease WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: mark_abandoned_runs
-- Runs of this connection still marked running while another run holds the lease were killed
-- (no failure callback ran): say so instead of leaving them running forever.
UPDATE ewssync.sync_runs
   SET status = 'failed', finished_at = now(),
       errors = errors || jsonb_build_array(
           'abandoned: the run stopped without reporting (killed or timed out); run '
           || %(run_key)s || ' took over the connection')
 WHERE conn_id = %(conn_id)s AND run_key <> %(run_key)s AND status = 'running'
RETURNING run_key;

-- name: clear_staged_appointments
DELETE FROM ewssync.staging_appointments WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: put_staging_run
INSERT INTO ewssync.staging_runs (run_key, conn_id, mode, ews_sync_state, window_start, window_end)
VALUES (%(run_key)s, %(conn_id)s, %(mode)s, %(ews_sync_state)s, %(window_start)s, %(window_end)s);

-- name: get_staging_run
SELECT mode, ews_sync_state, window_start, window_end
  FROM ewssync.staging_runs WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: staged_ews_items
SELECT item_id, change_key, item_type, uid, recurrence_id, master_item_id, subject, location,
       body, body_type, start_utc AS start, end_utc AS "end", is_all_day, start_date, end_date,
       timezone_windows, timezone_iana, sensitivity, reminder_is_set, reminder_minutes,
       legacy_free_busy, categories, last_modified, is_recurring
  FROM ewssync.staging_ews_items
 WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s
 ORDER BY item_id;

-- name: count_gone
SELECT count(*) FROM ewssync.staging_seen g
  JOIN ewssync.links l ON l.conn_id = g.conn_id AND l.ews_item_id = g.ews_item_id
 WHERE g.conn_id = %(conn_id)s AND g.run_key = %(run_key)s AND g.state = 'gone';

-- name: merge_rekey
-- Exchange may hand out a new item id for the same appointment (a mailbox move, a re-import):
-- the old id is confirmed gone in this run and exactly one new, unlinked item carries the same
-- UID + recurrence id. Then the link follows the new id instead of a delete and an insert.
-- The UID is only a hint: copied meetings and an .ics imported twice share one, so an item
-- whose old id still exists never hands its row to another.
WITH candidates AS (
    SELECT l.id AS link_id, s.ews_item_id AS new_item_id
      FROM ewssync.staging_appointments s
      JOIN ewssync.links l
        ON l.conn_id = s.conn_id AND l.uid = s.uid
       AND l.recurrence_id IS NOT DISTINCT FROM s.recurrence_id
      JOIN ewssync.staging_seen g
        ON g.conn_id = l.conn_id AND g.run_key = s.run_key AND g.ews_item_id = l.ews_item_id
       AND g.state = 'gone'
     WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s AND s.uid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ewssync.links o
                        WHERE o.conn_id = s.conn_id AND o.ews_item_id = s.ews_item_id)
), counted AS (
    SELECT link_id, new_item_id,
           count(*) OVER (PARTITION BY link_id) AS per_link,
           count(*) OVER (PARTITION BY new_item_id) AS per_item
      FROM candidates
), unique_pairs AS (
    SELECT link_id, new_item_id FROM counted WHERE per_link = 1 AND per_item = 1
)
UPDATE ewssync.links l
   SET ews_item_id = p.new_item_id
  FROM unique_pairs p
 WHERE l.id = p.link_id;

-- name: quarantine_invalid
-- Staged rows calendar.appointments would refuse (its CHECK constraints) leave the merge here,
-- named, instead of failing the whole mailbox's load. transform.repair fixes the known cases
-- first; this is the database's last word.
DELETE FROM ewssync.staging_appointments s
 WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s
   AND (s.starts_at IS NULL OR s.ends_at IS NULL OR s.ends_at < s.starts_at
        OR (s.all_day AND (s.start_date IS NULL OR s.end_date IS NULL
                           OR s.end_date < s.start_date))
        OR (s.reminder_minutes IS NOT NULL AND s.reminder_minutes NOT BETWEEN 0 AND 40320)
        OR s.show_as IS NULL
        OR s.show_as NOT IN ('free', 'tentative', 'busy', 'away', 'working_elsewhere'))
RETURNING s.ews_item_id, s.starts_at, s.ends_at, s.all_day, s.start_date, s.end_date;

-- name: linked_owners
-- Whose calendar the connection's synced appointments are in (normally one app user).
SELECT a.owner_user_id AS user_id, u.login, count(*) AS appointments
  FROM ewssync.links l
  JOIN calendar.appointments a ON a.id = l.appointment_id
  LEFT JOIN calendar.users u ON u.id = a.owner_user_id
 WHERE l.conn_id = %(conn_id)s
 GROUP BY a.owner_user_id, u.login
 ORDER BY a.owner_user_id;

-- name: move_to_user
-- The connection's app user changed, and the run was told to move: its rows follow.
UPDATE calendar.appointments a SET owner_user_id = %(user_id)s
  FROM ewssync.links l
 WHERE l.conn_id = %(conn_id)s AND a.id = l.appointment_id
   AND a.owner_user_id <> %(user_id)s;

-- name: merge_update
-- Items whose Exchange content changed since the last sync overwrite the app's row. A row the
-- app also changed since then (version moved past what the pipeline wrote) counts as a conflict;
-- Exchange wins on the pull side.
WITH changed AS (
    SELECT s.*, l.appointment_id,
           l.local_version IS DISTINCT FROM cur.version AS changed_locally
      FROM ewssync.staging_appointments s
      JOIN ewssync.links l ON l.conn_id = s.conn_id AND l.ews_item_id = s.ews_item_id
      JOIN calendar.appointments cur ON cur.id = l.appointment_id
     WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s
       AND l.ews_fingerprint IS DISTINCT FROM s.fingerprint
), updated AS (
    UPDATE calendar.appointments a
       SET title = c.title, location = c.location, notes = c.notes, notes_html = c.notes_html,
           starts_at = c.starts_at, ends_at = c.ends_at, all_day = c.all_day,
           start_date = c.start_date, end_date = c.end_date, time_zone = c.time_zone,
           is_private = c.is_private, reminder_minutes = c.reminder_minutes,
           show_as = c.show_as, category = c.category,
           series_key = c.series_key, occurrence_key = c.occurrence_key,
           deleted_at = NULL
      FROM changed c
     WHERE a.id = c.appointment_id
    RETURNING a.id, c.changed_locally
)
SELECT count(*) AS updated, count(*) FILTER (WHERE changed_locally) AS conflicts FROM updated;

-- name: merge_links
-- Every staged item's link now reflects what Exchange holds after this merge. The app-side
-- version moves only where this merge wrote the row, so a pending local edit is not swallowed.
UPDATE ewssync.links l
   SET change_key = s.change_key,
       local_version = CASE WHEN l.ews_fingerprint IS DISTINCT FROM s.fingerprint
                            THEN a.version ELSE l.local_version END,
       local_fingerprint = CASE WHEN l.ews_fingerprint IS DISTINCT FROM s.fingerprint
                                THEN s.fingerprint ELSE l.local_fingerprint END,
       ews_fingerprint = s.fingerprint,
       uid = s.uid, recurrence_id = s.recurrence_id, item_type = s.item_type,
       master_item_id = e.master_item_id,
       starts_at = s.starts_at, ends_at = s.ends_at, synced_at = now()
  FROM calendar.appointments a,
       ewssync.staging_appointments s
       LEFT JOIN ewssync.staging_ews_items e
              ON e.conn_id = s.conn_id AND e.run_key = s.run_key AND e.item_id = s.ews_item_id
 WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s
   AND l.conn_id = s.conn_id AND l.ews_item_id = s.ews_item_id
   AND a.id = l.appointment_id
   AND (l.ews_fingerprint IS DISTINCT FROM s.fingerprint
        OR l.change_key IS DISTINCT FROM s.change_key
        OR l.starts_at IS DISTINCT FROM s.starts_at OR l.ends_at IS DISTINCT FROM s.ends_at);

-- name: merge_insert
WITH new AS (
    SELECT s.*, e.master_item_id,
           nextval(pg_get_serial_sequence('calendar.appointments', 'id')) AS appointment_id
      FROM ewssync.staging_appointments s
      LEFT JOIN ewssync.staging_ews_items e
             ON e.conn_id = s.conn_id AND e.run_key = s.run_key AND e.item_id = s.ews_item_id
     WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s
       AND NOT EXISTS (SELECT 1 FROM ewssync.links l
                        WHERE l.conn_id = s.conn_id AND l.ews_item_id = s.ews_item_id)
), inserted AS (
    INSERT INTO calendar.appointments
           (id, owner_user_id, title, location, notes, notes_html, starts_at, ends_at, all_day,
            start_date, end_date, time_zone, is_private, reminder_minutes, show_as, category,
            series_key, occurrence_key)
    SELECT appointment_id, %(user_id)s, title, location, notes, notes_html, starts_at, ends_at,
           all_day, start_date, end_date, time_zone, is_private, reminder_minutes, show_as,
           category, series_key, occurrence_key
      FROM new
    -- The agreed state (record_synced's) written with the link: updating 10,000 links just
    -- inserted in the same statement's transaction cost more than inserting them.
    RETURNING id, version,
              ewssync.content(title, location, notes, notes_html, starts_at, ends_at, all_day,
                              start_date, end_date, time_zone, is_private, reminder_minutes,
                              show_as, category, recurrence_rule) AS synced
)
INSERT INTO ewssync.links
       (conn_id, appointment_id, ews_item_id, change_key, uid, recurrence_id, item_type,
        master_item_id, ews_fingerprint, local_fingerprint, local_version, starts_at, ends_at,
        synced, synced_version)
SELECT %(conn_id)s, n.appointment_id, n.ews_item_id, n.change_key, n.uid, n.recurrence_id,
       n.item_type, n.master_item_id, n.fingerprint, n.fingerprint, i.version, n.starts_at,
       n.ends_at, i.synced, i.version
  FROM new n JOIN inserted i ON i.id = n.appointment_id;

-- name: merge_delete
-- Items confirmed gone from Exchange: tombstone the appointment, drop the link.
WITH gone AS (
    SELECT l.id AS link_id, l.appointment_id
      FROM ewssync.staging_seen g
      JOIN ewssync.links l ON l.conn_id = g.conn_id AND l.ews_item_id = g.ews_item_id
     WHERE g.conn_id = %(conn_id)s AND g.run_key = %(run_key)s AND g.state = 'gone'
), tombstoned AS (
    UPDATE calendar.appointments a SET deleted_at = now()
      FROM gone WHERE a.id = gone.appointment_id AND a.deleted_at IS NULL
    RETURNING a.id
)
DELETE FROM ewssync.links l USING gone WHERE l.id = gone.link_id;

-- name: save_sync_state
INSERT INTO ewssync.sync_state (conn_id, ews_sync_state, window_start, window_end,
                                last_full_sync_at, updated_at)
VALUES (%(conn_id)s, %(ews_sync_state)s, %(window_start)s, %(window_end)s,
        CASE WHEN %(mode)s = 'full' THEN now() END, now())
ON CONFLICT (conn_id) DO UPDATE
   SET ews_sync_state = EXCLUDED.ews_sync_state,
       window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
       last_full_sync_at = coalesce(EXCLUDED.last_full_sync_at, ewssync.sync_state.last_full_sync_at),
       updated_at = now();

-- name: claim_mailbox
-- Claim (server, mailbox, user) for the connection when nobody holds it; return the holder.
-- A holder committed by a concurrent check after this statement began is not seen: the caller
-- asks again when no row comes back.
WITH taken AS (
    INSERT INTO ewssync.mailbox_claims (server, mailbox, user_id, conn_id)
    VALUES (%(server)s, %(mailbox)s, %(user_id)s, %(conn_id)s)
    ON CONFLICT (server, mailbox, user_id) DO NOTHING
    RETURNING conn_id, claimed_at
)
SELECT conn_id, claimed_at FROM taken
UNION ALL
SELECT conn_id, claimed_at FROM ewssync.mailbox_claims
 WHERE server = %(server)s AND mailbox = %(mailbox)s AND user_id = %(user_id)s
LIMIT 1;

-- name: mailbox_holder
SELECT conn_id, claimed_at FROM ewssync.mailbox_claims
 WHERE server = %(server)s AND mailbox = %(mailbox)s AND user_id = %(user_id)s;

-- name: take_over_mailbox
-- Hand a claim whose holder is gone (deleted, renamed, now pointing elsewhere) to the connection.
UPDATE ewssync.mailbox_claims SET conn_id = %(conn_id)s, claimed_at = now()
 WHERE server = %(server)s AND mailbox = %(mailbox)s AND user_id = %(user_id)s
   AND conn_id = %(holder)s
RETURNING conn_id;

-- name: release_other_claims
-- A connection holds one claim: the one its settings name now (it may have been edited).
DELETE FROM ewssync.mailbox_claims
 WHERE conn_id = %(conn_id)s
   AND (server, mailbox, user_id) <> (%(server)s, %(mailbox)s, %(user_id)s);
