-- Reliability: staging keyed by (connection, run); UID is a hint, not an identity; one run per
-- connection at a time (a lease).
-- depends: 0002_ewssync

-- Two connections may sync the same mailbox (same item ids) and Airflow gives DAGs on the same
-- schedule the same run id: every staging key starts with the connection.
ALTER TABLE ewssync.staging_ews_items DROP CONSTRAINT staging_ews_items_pkey,
    ADD PRIMARY KEY (conn_id, run_key, item_id);
ALTER TABLE ewssync.staging_appointments DROP CONSTRAINT staging_appointments_pkey,
    ADD PRIMARY KEY (conn_id, run_key, ews_item_id);
ALTER TABLE ewssync.staging_seen DROP CONSTRAINT staging_seen_pkey,
    ADD PRIMARY KEY (conn_id, run_key, ews_item_id);

-- Copied meetings and an .ics imported twice share one UID; items without a UID exist too.
-- Every item is its own appointment: the UID only helps re-key an item whose id changed.
ALTER TABLE ewssync.links DROP CONSTRAINT links_one_per_uid;
CREATE INDEX links_conn_uid ON ewssync.links (conn_id, uid, recurrence_id);

-- The run that owns a connection's staging and sync state right now. Taken by extract, kept by
-- the run's later steps, given back by report (or when the run failed or went stale).
CREATE TABLE ewssync.run_lease (
    conn_id     text PRIMARY KEY,
    run_key     text NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    touched_at  timestamptz NOT NULL DEFAULT now()
);
