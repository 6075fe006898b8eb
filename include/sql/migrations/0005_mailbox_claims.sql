-- Which connection syncs a mailbox for an app user: two connections for the same (EWS endpoint,
-- mailbox, app user) would each import every appointment, doubling the calendar silently.
-- depends: 0002_ewssync

CREATE TABLE ewssync.mailbox_claims (
    server     text NOT NULL,     -- the EWS endpoint, lower case
    mailbox    text NOT NULL,     -- the mailbox's SMTP address, lower case
    user_id    bigint NOT NULL REFERENCES calendar.users (id) ON DELETE CASCADE,
    conn_id    text NOT NULL,     -- the connection whose check claimed it first
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (server, mailbox, user_id)
);

CREATE INDEX mailbox_claims_conn ON ewssync.mailbox_claims (conn_id);
