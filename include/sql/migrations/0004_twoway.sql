-- Two-way sync: the app side each link last agreed on, stamps for crash adoption, push bookkeeping,
-- conflicts and skipped appointments per run.
-- depends: 0002_ewssync 0003_reliability

-- An appointment's content in one canonical JSON form (instants as UTC 'Z' strings, dates as
-- ISO dates): the planner compares the app row now with what the link recorded at the last sync.
CREATE FUNCTION ewssync.content(
    title text, location text, notes text, notes_html text, starts_at timestamptz,
    ends_at timestamptz, all_day boolean, start_date date, end_date date, time_zone text,
    is_private boolean, reminder_minutes integer, show_as text, category text,
    recurrence_rule text
) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'title', nullif(title, ''), 'location', nullif(location, ''), 'notes', nullif(notes, ''),
        'notes_html', nullif(notes_html, ''),
        'starts_at', to_char(starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'ends_at', to_char(ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'all_day', all_day, 'start_date', start_date::text, 'end_date', end_date::text,
        'time_zone', time_zone, 'is_private', is_private, 'reminder_minutes', reminder_minutes,
        'show_as', show_as, 'category', nullif(category, ''),
        'recurrence_rule', nullif(recurrence_rule, ''))
$$;

-- What the pair agreed on at the last sync: the app row's content (ewssync.content) and version.
-- After a conflict the app won, it holds Exchange's content instead, so push writes exactly the
-- fields where the app differs from Exchange.
ALTER TABLE ewssync.links ADD COLUMN synced jsonb;
ALTER TABLE ewssync.links ADD COLUMN synced_version bigint;

-- The app appointment id push stamped on an item (extended property), as extract read it.
ALTER TABLE ewssync.staging_ews_items ADD COLUMN stamp text;

-- Creates sent to Exchange whose link is not recorded yet. Written (and committed) before the
-- CreateItem, removed with the link: a row left over means the answer may have been lost, so the
-- next push looks for the stamped item before creating again.
CREATE TABLE ewssync.push_intents (
    conn_id        text NOT NULL,
    appointment_id bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conn_id, appointment_id)
);

-- Items push deleted: SyncFolderItems reports them back as deletions; they are ours, not a
-- series change to re-read.
CREATE TABLE ewssync.pushed_deletions (
    conn_id     text NOT NULL,
    ews_item_id text NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conn_id, ews_item_id)
);

-- Per run: every conflict (appointment, item, fields changed on each side, winner) and every
-- appointment not pushed (and why).
ALTER TABLE ewssync.sync_runs ADD COLUMN conflicts jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE ewssync.sync_runs ADD COLUMN not_pushed jsonb NOT NULL DEFAULT '[]'::jsonb;
