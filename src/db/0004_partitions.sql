-- Events and minute rows partitioned by UTC day on their time column, so retention drops whole
-- partitions instead of deleting rows. Each table has a DEFAULT partition: an insert never fails
-- for want of a partition (a day not created yet, a day already dropped). The service's
-- maintenance task (src/db/partitions.rs) creates days ahead and drops old ones. Existing rows are
-- kept: copied into a partition of their day (one per day that has rows) in this transaction.

-- Creates the partition `<parent>_pYYYYMMDD` for `day` unless it exists; rows of that day that
-- went to the default partition meanwhile move into it. True when it was created.
CREATE OR REPLACE FUNCTION its_ensure_day_partition(parent TEXT, key TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $fn$
DECLARE
    part TEXT := parent || '_p' || to_char(day, 'YYYYMMDD');
    lo TEXT := to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi TEXT := to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', parent || '_default', key, lo, key, hi, part);
    -- Attaching builds the partitioned table's indexes (primary key included) on it.
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    RETURN true;
END
$fn$;

-- events: the primary key gains `ts` (a partitioned table's unique keys include its partition
-- key). An event id always comes with the same ts, so a replay still conflicts and is skipped.
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_pkey TO events_unpartitioned_pkey;
DROP INDEX IF EXISTS events_camera_ts;
DROP INDEX IF EXISTS events_ts_id;
DROP INDEX IF EXISTS events_camera_ts_id;
CREATE TABLE events (
    event_id         TEXT NOT NULL,
    camera_id        TEXT NOT NULL,
    type             TEXT NOT NULL,
    ts               TIMESTAMPTZ NOT NULL,
    frame_seq        BIGINT NOT NULL,
    track_id         BIGINT,
    class            TEXT,
    line_id          TEXT,
    direction        TEXT,
    payload          JSONB NOT NULL,
    inserted_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    geometry_version INT NOT NULL DEFAULT 1,
    zone_id          TEXT,
    incident_id      TEXT,
    PRIMARY KEY (event_id, ts)
) PARTITION BY RANGE (ts);
-- The API's pages: all events, one camera's, one type's (incidents are rare: they need their own
-- index), each walked by the (ts, event_id) cursor. Also serves retention's incident deletes.
CREATE INDEX events_ts_id ON events (ts, event_id);
CREATE INDEX events_camera_ts_id ON events (camera_id, ts, event_id);
CREATE INDEX events_type_ts_id ON events (type, ts, event_id);
CREATE TABLE events_default PARTITION OF events DEFAULT;
SELECT its_ensure_day_partition('events', 'ts', day)
FROM (SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS day FROM events_unpartitioned
      UNION SELECT (now() AT TIME ZONE 'UTC')::date + n FROM generate_series(0, 7) AS n) AS days;
INSERT INTO events (event_id, camera_id, type, ts, frame_seq, track_id, class, line_id, direction, payload,
                    inserted_at, geometry_version, zone_id, incident_id)
SELECT event_id, camera_id, type, ts, frame_seq, track_id, class, line_id, direction, payload,
       inserted_at, geometry_version, zone_id, incident_id
FROM events_unpartitioned;
DROP TABLE events_unpartitioned;

-- analytics_1m: same key as before (it holds interval_start already).
ALTER TABLE analytics_1m RENAME TO analytics_1m_unpartitioned;
ALTER TABLE analytics_1m_unpartitioned RENAME CONSTRAINT analytics_1m_pkey TO analytics_1m_unpartitioned_pkey;
CREATE TABLE analytics_1m (
    camera_id        TEXT NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,
    geometry_version INT NOT NULL,
    element_id       TEXT NOT NULL,
    stream_epoch_ms  BIGINT NOT NULL,
    element_kind     TEXT NOT NULL,
    measures         JSONB NOT NULL,
    PRIMARY KEY (camera_id, interval_start, geometry_version, element_id, stream_epoch_ms)
) PARTITION BY RANGE (interval_start);
CREATE TABLE analytics_1m_default PARTITION OF analytics_1m DEFAULT;
SELECT its_ensure_day_partition('analytics_1m', 'interval_start', day)
FROM (SELECT DISTINCT (interval_start AT TIME ZONE 'UTC')::date AS day FROM analytics_1m_unpartitioned
      UNION SELECT (now() AT TIME ZONE 'UTC')::date + n FROM generate_series(0, 7) AS n) AS days;
INSERT INTO analytics_1m (camera_id, interval_start, geometry_version, element_id, stream_epoch_ms, element_kind,
                          measures)
SELECT camera_id, interval_start, geometry_version, element_id, stream_epoch_ms, element_kind, measures
FROM analytics_1m_unpartitioned;
DROP TABLE analytics_1m_unpartitioned;
