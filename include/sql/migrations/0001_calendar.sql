-- The app's calendar: users and appointments, with a change version and tombstones kept by triggers.
-- depends:

CREATE SCHEMA IF NOT EXISTS calendar;

CREATE TABLE calendar.users (
    id           bigserial PRIMARY KEY,
    login        text NOT NULL UNIQUE,
    email        text,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One global, monotonically increasing sequence: "everything changed since version N" is one
-- index range scan, whatever user or connection the change belongs to.
CREATE SEQUENCE calendar.change_version_seq;

CREATE TABLE calendar.appointments (
    id               bigserial PRIMARY KEY,
    owner_user_id    bigint NOT NULL REFERENCES calendar.users (id),
    title            text NOT NULL DEFAULT '',
    location         text NOT NULL DEFAULT '',
    notes            text NOT NULL DEFAULT '',
    notes_html       text,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    all_day          boolean NOT NULL DEFAULT false,
    start_date       date,          -- local date of the start (in time_zone)
    end_date         date,          -- local date of the end, inclusive for all-day appointments
    time_zone        text NOT NULL DEFAULT 'UTC',  -- IANA name
    is_private       boolean NOT NULL DEFAULT false,
    reminder_minutes integer CHECK (reminder_minutes IS NULL OR reminder_minutes BETWEEN 0 AND 40320),
    show_as          text NOT NULL DEFAULT 'busy'
                     CHECK (show_as IN ('free', 'tentative', 'busy', 'away', 'working_elsewhere')),
    category         text,          -- the app's appointment type <-> an Exchange category
    recurrence_rule  text,          -- RFC 5545 RRULE of a series created in the app
    series_key       text,          -- iCalendar UID of the series an occurrence belongs to
    occurrence_key   text,          -- original start (ISO-8601 UTC) of an occurrence in its series
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,   -- tombstone: set instead of removing the row
    version          bigint NOT NULL DEFAULT nextval('calendar.change_version_seq'),
    CONSTRAINT appointments_time_order CHECK (ends_at >= starts_at),
    CONSTRAINT appointments_all_day_dates CHECK (
        NOT all_day OR (start_date IS NOT NULL AND end_date IS NOT NULL AND end_date >= start_date))
);

CREATE INDEX appointments_owner_starts ON calendar.appointments (owner_user_id, starts_at)
    WHERE deleted_at IS NULL;
CREATE INDEX appointments_version ON calendar.appointments (version);

-- Every insert or update takes a fresh change version and stamps updated_at, whoever writes.
CREATE FUNCTION calendar.appointments_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('calendar.change_version_seq');
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
        NEW.created_at := OLD.created_at;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER appointments_touch
    BEFORE INSERT OR UPDATE ON calendar.appointments
    FOR EACH ROW EXECUTE FUNCTION calendar.appointments_touch();

-- A DELETE becomes a tombstone (deleted_at set, new version) so the deletion can be pushed to
-- Exchange later. Purging tombstones for real: SET LOCAL calendar.allow_purge = 'on'.
CREATE FUNCTION calendar.appointments_tombstone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('calendar.allow_purge', true), '') = 'on' THEN
        RETURN OLD;
    END IF;
    IF OLD.deleted_at IS NULL THEN
        UPDATE calendar.appointments SET deleted_at = now() WHERE id = OLD.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER appointments_tombstone
    BEFORE DELETE ON calendar.appointments
    FOR EACH ROW EXECUTE FUNCTION calendar.appointments_tombstone();

CREATE VIEW calendar.live_appointments AS
    SELECT * FROM calendar.appointments WHERE deleted_at IS NULL;
