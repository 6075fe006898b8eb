-- The pipeline's bookkeeping: links between appointments and EWS items, sync state, staging, runs.
-- depends: 0001_calendar

CREATE SCHEMA IF NOT EXISTS ewssync;

CREATE TABLE ewssync.links (
    id                bigserial PRIMARY KEY,
    conn_id           text NOT NULL,
    appointment_id    bigint NOT NULL REFERENCES calendar.appointments (id) ON DELETE CASCADE,
    ews_item_id       text NOT NULL,
    change_key        text,
    uid               text,
    recurrence_id     timestamptz,     -- original start of an occurrence; NULL for single items
    item_type         text NOT NULL DEFAULT 'Single',
    master_item_id    text,            -- the series master of an occurrence or exception
    ews_fingerprint   text,            -- content digest of the Exchange side at the last sync
    local_fingerprint text,            -- content digest of the app side at the last sync
    local_version     bigint,          -- appointments.version the pipeline wrote or last saw
    starts_at         timestamptz,     -- where Exchange had it at the last sync (window bookkeeping)
    ends_at           timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT links_one_per_item UNIQUE (conn_id, ews_item_id),
    CONSTRAINT links_one_per_uid UNIQUE NULLS NOT DISTINCT (conn_id, uid, recurrence_id),
    CONSTRAINT links_one_per_appointment UNIQUE (conn_id, appointment_id)
);

CREATE INDEX links_conn_starts ON ewssync.links (conn_id, starts_at);

CREATE TABLE ewssync.sync_state (
    conn_id             text PRIMARY KEY,
    ews_sync_state      text,          -- SyncFolderItems state of the calendar folder
    window_start        timestamptz,
    window_end          timestamptz,
    last_pushed_version bigint NOT NULL DEFAULT 0,
    last_full_sync_at   timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Raw Exchange items of one run, as extracted (one row per item of the window).
CREATE UNLOGGED TABLE ewssync.staging_ews_items (
    run_key          text NOT NULL,
    conn_id          text NOT NULL,
    item_id          text NOT NULL,
    change_key       text,
    item_type        text,
    uid              text,
    recurrence_id    timestamptz,
    master_item_id   text,
    subject          text,
    location         text,
    body             text,
    body_type        text,
    start_utc        timestamptz,
    end_utc          timestamptz,
    is_all_day       boolean,
    start_date       date,
    end_date         date,
    timezone_windows text,
    timezone_iana    text,
    sensitivity      text,
    reminder_is_set  boolean,
    reminder_minutes integer,
    legacy_free_busy text,
    categories       text[],
    last_modified    timestamptz,
    is_recurring     boolean,
    PRIMARY KEY (run_key, item_id)
);

-- Normalised appointments of one run, ready to merge.
CREATE UNLOGGED TABLE ewssync.staging_appointments (
    run_key          text NOT NULL,
    conn_id          text NOT NULL,
    ews_item_id      text NOT NULL,
    change_key       text,
    uid              text,
    recurrence_id    timestamptz,
    series_key       text,
    occurrence_key   text,
    item_type        text,
    title            text,
    location         text,
    notes            text,
    notes_html       text,
    starts_at        timestamptz,
    ends_at          timestamptz,
    all_day          boolean,
    start_date       date,
    end_date         date,
    time_zone        text,
    is_private       boolean,
    reminder_minutes integer,
    show_as          text,
    category         text,
    fingerprint      text,
    PRIMARY KEY (run_key, ews_item_id)
);

-- Items a run saw gone from Exchange (confirmed by id), and items it saw unchanged.
CREATE UNLOGGED TABLE ewssync.staging_seen (
    run_key     text NOT NULL,
    conn_id     text NOT NULL,
    ews_item_id text NOT NULL,
    state       text NOT NULL CHECK (state IN ('present', 'gone')),
    PRIMARY KEY (run_key, ews_item_id)
);

-- One row per run being staged: what extract learnt that load must commit with the merge.
CREATE UNLOGGED TABLE ewssync.staging_runs (
    run_key        text NOT NULL,
    conn_id        text NOT NULL,
    mode           text NOT NULL,      -- full | incremental | no_change
    ews_sync_state text,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL,
    PRIMARY KEY (conn_id, run_key)
);

CREATE TABLE ewssync.sync_runs (
    id          bigserial PRIMARY KEY,
    conn_id     text NOT NULL,
    run_key     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'success', 'failed', 'skipped', 'stopped')),
    mode        text,                  -- full | incremental | no_change
    counts      jsonb NOT NULL DEFAULT '{}'::jsonb,
    errors      jsonb NOT NULL DEFAULT '[]'::jsonb,
    durations   jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT sync_runs_one_per_run UNIQUE (conn_id, run_key)
);
