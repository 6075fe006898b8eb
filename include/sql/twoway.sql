-- Two-way sync statements (reconcile in load, push), one per "-- name:" section, parameterised.

-- name: adopt_stamped
-- Items extract read that carry the stamp of one of this user's appointments without a link: a
-- create whose answer was lost. Link them instead of importing a second copy. The app side counts
-- as changed (local_version NULL) and `synced` holds Exchange's content, so push writes exactly
-- what differs.
WITH candidates AS (
    SELECT DISTINCT ON (a.id) s.*, e.master_item_id, a.id AS appointment_id
      FROM ewssync.staging_ews_items e
      JOIN ewssync.staging_appointments s
        ON s.conn_id = e.conn_id AND s.run_key = e.run_key AND s.ews_item_id = e.item_id
      JOIN calendar.appointments a
        ON e.stamp ~ '^[0-9]+$' AND a.id = e.stamp::bigint AND a.owner_user_id = %(user_id)s
     WHERE e.conn_id = %(conn_id)s AND e.run_key = %(run_key)s
       AND NOT EXISTS (SELECT 1 FROM ewssync.links l
                        WHERE l.conn_id = e.conn_id
                          AND (l.appointment_id = a.id OR l.ews_item_id = e.item_id
                               OR (l.uid = s.uid AND l.recurrence_id IS NOT DISTINCT FROM s.recurrence_id)))
     ORDER BY a.id, e.item_id
), linked AS (
    INSERT INTO ewssync.links
           (conn_id, appointment_id, ews_item_id, change_key, uid, recurrence_id, item_type,
            master_item_id, ews_fingerprint, local_fingerprint, local_version, starts_at, ends_at,
            synced, synced_version)
    SELECT %(conn_id)s, c.appointment_id, c.ews_item_id, c.change_key, c.uid, c.recurrence_id,
           c.item_type, c.master_item_id, c.fingerprint, c.fingerprint, NULL, c.starts_at,
           c.ends_at,
           ewssync.content(c.title, c.location, c.notes, c.notes_html, c.starts_at, c.ends_at,
                           c.all_day, c.start_date, c.end_date, c.time_zone, c.is_private,
                           c.reminder_minutes, c.show_as, c.category, NULL),
           NULL
      FROM candidates c
    RETURNING appointment_id
), dropped AS (
    DELETE FROM ewssync.push_intents p USING linked
     WHERE p.conn_id = %(conn_id)s AND p.appointment_id = linked.appointment_id
)
SELECT count(*) AS adopted FROM linked;

-- name: pull_pairs
-- Linked items this run read as changed (or confirmed gone) whose app row also changed since the
-- last sync: the candidates for a conflict. Everything else the merge applies as before.
SELECT l.ews_item_id, l.appointment_id, l.local_version, l.ews_fingerprint, l.synced,
       a.version, a.deleted_at IS NOT NULL AS deleted, coalesce(a.deleted_at, a.updated_at) AS updated_at,
       ewssync.content(a.title, a.location, a.notes, a.notes_html, a.starts_at, a.ends_at,
                       a.all_day, a.start_date, a.end_date, a.time_zone, a.is_private,
                       a.reminder_minutes, a.show_as, a.category, a.recurrence_rule) AS content,
       s.fingerprint AS staged_fingerprint, e.last_modified,
       CASE WHEN s.ews_item_id IS NOT NULL THEN
           ewssync.content(s.title, s.location, s.notes, s.notes_html, s.starts_at, s.ends_at,
                           s.all_day, s.start_date, s.end_date, s.time_zone, s.is_private,
                           s.reminder_minutes, s.show_as, s.category, a.recurrence_rule)
       END AS staged_content,
       g.ews_item_id IS NOT NULL AS gone
  FROM ewssync.links l
  JOIN calendar.appointments a ON a.id = l.appointment_id
  LEFT JOIN ewssync.staging_appointments s
         ON s.conn_id = l.conn_id AND s.run_key = %(run_key)s AND s.ews_item_id = l.ews_item_id
  LEFT JOIN ewssync.staging_ews_items e
         ON e.conn_id = l.conn_id AND e.run_key = %(run_key)s AND e.item_id = l.ews_item_id
  LEFT JOIN ewssync.staging_seen g
         ON g.conn_id = l.conn_id AND g.run_key = %(run_key)s AND g.ews_item_id = l.ews_item_id
        AND g.state = 'gone'
 WHERE l.conn_id = %(conn_id)s
   AND (s.ews_item_id IS NOT NULL OR g.ews_item_id IS NOT NULL)
   AND a.version IS DISTINCT FROM l.local_version;

-- name: keep_app_side
-- Conflicts the app won, on items Exchange changed: the link takes Exchange's state (change key,
-- fingerprint, content as `synced`), the app row stays as it is and the merge skips the item;
-- push then writes the app's version over Exchange's.
WITH kept AS (
    UPDATE ewssync.links l
       SET change_key = s.change_key, ews_fingerprint = s.fingerprint,
           starts_at = s.starts_at, ends_at = s.ends_at,
           synced = ewssync.content(s.title, s.location, s.notes, s.notes_html, s.starts_at,
                                    s.ends_at, s.all_day, s.start_date, s.end_date, s.time_zone,
                                    s.is_private, s.reminder_minutes, s.show_as, s.category,
                                    l.synced ->> 'recurrence_rule'),
           synced_at = now()
      FROM ewssync.staging_appointments s
     WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s
       AND s.ews_item_id = ANY(%(item_ids)s)
       AND l.conn_id = s.conn_id AND l.ews_item_id = s.ews_item_id
    RETURNING l.ews_item_id
)
DELETE FROM ewssync.staging_appointments s USING kept
 WHERE s.conn_id = %(conn_id)s AND s.run_key = %(run_key)s AND s.ews_item_id = kept.ews_item_id;

-- name: recreate_app_side
-- Conflicts the app won, on items Exchange deleted: drop the link (the row is not tombstoned);
-- push creates the item again from the app's row.
WITH dropped AS (
    DELETE FROM ewssync.links
     WHERE conn_id = %(conn_id)s AND ews_item_id = ANY(%(item_ids)s)
    RETURNING ews_item_id
)
DELETE FROM ewssync.staging_seen g USING dropped
 WHERE g.conn_id = %(conn_id)s AND g.run_key = %(run_key)s AND g.ews_item_id = dropped.ews_item_id;

-- name: record_synced
-- After the merge: links whose app row is the version the pipeline wrote or last saw record that
-- row's content as the agreed state.
UPDATE ewssync.links l
   SET synced = ewssync.content(a.title, a.location, a.notes, a.notes_html, a.starts_at,
                                a.ends_at, a.all_day, a.start_date, a.end_date, a.time_zone,
                                a.is_private, a.reminder_minutes, a.show_as, a.category,
                                a.recurrence_rule),
       synced_version = a.version
  FROM calendar.appointments a
 WHERE l.conn_id = %(conn_id)s AND a.id = l.appointment_id
   AND l.local_version = a.version
   AND l.synced_version IS DISTINCT FROM a.version
   -- implied by the two above; lets the links already agreed skip the join
   AND l.synced_version IS DISTINCT FROM l.local_version;

-- name: add_conflicts
UPDATE ewssync.sync_runs
   SET conflicts = conflicts || %(conflicts)s::jsonb,
       counts = counts || jsonb_build_object(
           'conflicts', jsonb_array_length(conflicts || %(conflicts)s::jsonb))
 WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: set_not_pushed
UPDATE ewssync.sync_runs SET not_pushed = %(not_pushed)s::jsonb
 WHERE conn_id = %(conn_id)s AND run_key = %(run_key)s;

-- name: push_pairs
-- The app side of push: this user's rows changed since their link's last sync (or never linked,
-- live and inside the window), with the link's last agreed state.
SELECT a.id AS appointment_id, a.version, a.deleted_at IS NOT NULL AS deleted,
       coalesce(a.deleted_at, a.updated_at) AS updated_at,
       a.title, a.location, a.notes, a.notes_html, a.starts_at, a.ends_at, a.all_day,
       a.start_date, a.end_date, a.time_zone, a.is_private, a.reminder_minutes, a.show_as,
       a.category, a.recurrence_rule, a.series_key, a.occurrence_key,
       ewssync.content(a.title, a.location, a.notes, a.notes_html, a.starts_at, a.ends_at,
                       a.all_day, a.start_date, a.end_date, a.time_zone, a.is_private,
                       a.reminder_minutes, a.show_as, a.category, a.recurrence_rule) AS content,
       a.starts_at < %(window_end)s AND a.ends_at > %(window_start)s AS in_window,
       l.ews_item_id, l.change_key, l.local_version, l.ews_fingerprint, l.synced, l.item_type,
       l.uid, l.recurrence_id
  FROM calendar.appointments a
  LEFT JOIN ewssync.links l ON l.conn_id = %(conn_id)s AND l.appointment_id = a.id
 WHERE a.owner_user_id = %(user_id)s
   AND a.version > %(since_version)s
   AND ((l.id IS NULL AND a.deleted_at IS NULL
         AND (a.starts_at < %(window_end)s AND a.ends_at > %(window_start)s
              OR a.recurrence_rule IS NOT NULL))
        OR (l.id IS NOT NULL AND a.version IS DISTINCT FROM l.local_version))
 ORDER BY a.recurrence_rule IS NULL, a.id;

-- name: series_links
-- The links of series masters, by UID: occurrences created in the app attach to them.
SELECT l.uid, l.ews_item_id, l.appointment_id, a.starts_at, a.time_zone, a.recurrence_rule
  FROM ewssync.links l JOIN calendar.appointments a ON a.id = l.appointment_id
 WHERE l.conn_id = %(conn_id)s AND l.item_type = 'RecurringMaster' AND l.uid = ANY(%(uids)s);

-- name: occurrence_links
SELECT uid, recurrence_id, appointment_id, ews_item_id FROM ewssync.links
 WHERE conn_id = %(conn_id)s AND uid = ANY(%(uids)s) AND recurrence_id IS NOT NULL;

-- name: add_push_intents
INSERT INTO ewssync.push_intents (conn_id, appointment_id)
SELECT %(conn_id)s, unnest(%(appointment_ids)s::bigint[])
ON CONFLICT DO NOTHING;

-- name: push_intents
SELECT appointment_id FROM ewssync.push_intents WHERE conn_id = %(conn_id)s ORDER BY appointment_id;

-- name: drop_push_intents
DELETE FROM ewssync.push_intents
 WHERE conn_id = %(conn_id)s AND appointment_id = ANY(%(appointment_ids)s::bigint[]);

-- name: pushed_links
-- After creates, updates or an adoption: each link records what both sides now hold (one JSON
-- array of links, one round trip per batch).
INSERT INTO ewssync.links
       (conn_id, appointment_id, ews_item_id, change_key, uid, recurrence_id, item_type,
        master_item_id, ews_fingerprint, local_fingerprint, local_version, starts_at, ends_at,
        synced, synced_version, synced_at)
SELECT %(conn_id)s, r.appointment_id, r.ews_item_id, r.change_key, r.uid, r.recurrence_id,
       coalesce(r.item_type, 'Single'), r.master_item_id, r.fingerprint, r.fingerprint,
       r.version, r.starts_at, r.ends_at, r.synced, r.version, now()
  FROM jsonb_to_recordset(%(links)s::jsonb) AS r(
       appointment_id bigint, ews_item_id text, change_key text, uid text,
       recurrence_id timestamptz, item_type text, master_item_id text, fingerprint text,
       version bigint, starts_at timestamptz, ends_at timestamptz, synced jsonb)
ON CONFLICT (conn_id, appointment_id) DO UPDATE
   SET ews_item_id = EXCLUDED.ews_item_id, change_key = EXCLUDED.change_key,
       uid = coalesce(EXCLUDED.uid, ewssync.links.uid),
       recurrence_id = coalesce(EXCLUDED.recurrence_id, ewssync.links.recurrence_id),
       item_type = EXCLUDED.item_type,
       master_item_id = coalesce(EXCLUDED.master_item_id, ewssync.links.master_item_id),
       ews_fingerprint = EXCLUDED.ews_fingerprint, local_fingerprint = EXCLUDED.local_fingerprint,
       local_version = EXCLUDED.local_version, starts_at = EXCLUDED.starts_at,
       ends_at = EXCLUDED.ends_at, synced = EXCLUDED.synced,
       synced_version = EXCLUDED.synced_version, synced_at = now();

-- name: acknowledge_link
UPDATE ewssync.links SET local_version = %(version)s, synced_version = %(version)s,
       synced = %(synced)s::jsonb, synced_at = now()
 WHERE conn_id = %(conn_id)s AND appointment_id = %(appointment_id)s;

-- name: drop_link
DELETE FROM ewssync.links WHERE conn_id = %(conn_id)s AND appointment_id = %(appointment_id)s;

-- name: add_pushed_deletions
INSERT INTO ewssync.pushed_deletions (conn_id, ews_item_id)
SELECT %(conn_id)s, unnest(%(item_ids)s::text[])
ON CONFLICT DO NOTHING;

-- name: pushed_deletions
SELECT ews_item_id FROM ewssync.pushed_deletions
 WHERE conn_id = %(conn_id)s AND ews_item_id = ANY(%(item_ids)s);

-- name: prune_pushed_deletions
DELETE FROM ewssync.pushed_deletions
 WHERE conn_id = %(conn_id)s AND deleted_at < now() - interval '30 days';

-- name: links_change_keys
SELECT ews_item_id, change_key, item_type FROM ewssync.links
 WHERE conn_id = %(conn_id)s AND ews_item_id = ANY(%(item_ids)s);

-- name: linked_items_count
SELECT count(*) FROM ewssync.links WHERE conn_id = %(conn_id)s;

-- name: normalize_pushed
-- Rows push wrote take the values Exchange now reports for them (the zone the item was created
-- in, a default reminder, all-day instants at the zone's midnights, local dates), so both sides
-- are equal and nothing echoes back. Only where the row is still the version push read; the link follows.
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(versions)s::bigint[], %(zones)s::text[],
                         %(reminders)s::integer[], %(starts)s::timestamptz[],
                         %(ends)s::timestamptz[], %(start_dates)s::date[], %(end_dates)s::date[])
           AS v(id, version, time_zone, reminder_minutes, starts_at, ends_at, start_date,
                end_date)
), written AS (
    UPDATE calendar.appointments a
       SET time_zone = v.time_zone, reminder_minutes = v.reminder_minutes,
           starts_at = v.starts_at, ends_at = v.ends_at, start_date = v.start_date,
           end_date = v.end_date
      FROM v
     WHERE a.id = v.id AND a.version = v.version
       AND (a.time_zone, a.reminder_minutes, a.starts_at, a.ends_at, a.start_date, a.end_date)
           IS DISTINCT FROM (v.time_zone, v.reminder_minutes, v.starts_at, v.ends_at,
                             v.start_date, v.end_date)
    RETURNING a.*
)
UPDATE ewssync.links l
   SET local_version = w.version, synced_version = w.version,
       synced = ewssync.content(w.title, w.location, w.notes, w.notes_html, w.starts_at,
                                w.ends_at, w.all_day, w.start_date, w.end_date, w.time_zone,
                                w.is_private, w.reminder_minutes, w.show_as, w.category,
                                w.recurrence_rule)
  FROM written w
 WHERE l.conn_id = %(conn_id)s AND l.appointment_id = w.id;

-- name: advance_sync_state
-- After push: the SyncFolderItems state moves past push's own writes, only if no run moved it
-- meanwhile (compare and set).
UPDATE ewssync.sync_state SET ews_sync_state = %(new_state)s, updated_at = now()
 WHERE conn_id = %(conn_id)s AND ews_sync_state = %(old_state)s;
