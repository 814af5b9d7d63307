-- Analytics: versioned camera geometry, any event type, per-minute aggregates.

-- Every geometry a camera had; a change is a new version and history rows name theirs. Rows
-- outlive the camera, so its history stays readable; re-registering continues the numbering.
CREATE TABLE IF NOT EXISTS camera_geometries (
    camera_id   TEXT NOT NULL,
    version     INT NOT NULL,
    geometry    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (camera_id, version)
);
ALTER TABLE cameras ADD COLUMN IF NOT EXISTS geometry_version INT NOT NULL DEFAULT 1;

-- Events of every type: the crossing columns apply to line crossings only.
ALTER TABLE events
    ALTER COLUMN track_id DROP NOT NULL,
    ALTER COLUMN class DROP NOT NULL,
    ALTER COLUMN line_id DROP NOT NULL,
    ALTER COLUMN direction DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS geometry_version INT NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS zone_id TEXT,
    ADD COLUMN IF NOT EXISTS incident_id TEXT;
-- Cursor paging walks (ts, event_id).
CREATE INDEX IF NOT EXISTS events_ts_id ON events (ts, event_id);
CREATE INDEX IF NOT EXISTS events_camera_ts_id ON events (camera_id, ts, event_id);

-- One row per camera, geometry version, element (line, zone, lane) and UTC minute of frame time.
-- `measures` holds mergeable accumulators (src/analytics/measures.rs): longer intervals are
-- rolled up from these rows. A row written again (replay) replaces itself.
-- `stream_epoch_ms` tells apart two runs of a camera within one minute (a restart): each keeps
-- its own part of the minute, and the roll-up merges them.
CREATE TABLE IF NOT EXISTS analytics_1m (
    camera_id        TEXT NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,
    geometry_version INT NOT NULL,
    element_id       TEXT NOT NULL,
    stream_epoch_ms  BIGINT NOT NULL,
    element_kind     TEXT NOT NULL,
    measures         JSONB NOT NULL,
    PRIMARY KEY (camera_id, interval_start, geometry_version, element_id, stream_epoch_ms)
);

-- Cameras stored by migration 1 carry their lines at the top level of the spec: move them into
-- the geometry and record that as version 1, so they start again and their history stays
-- attributed.
UPDATE cameras
SET spec = (spec - 'lines') || jsonb_build_object('geometry', jsonb_build_object('lines', COALESCE(spec->'lines', '[]'::jsonb)))
WHERE spec ? 'lines';
INSERT INTO camera_geometries (camera_id, version, geometry)
SELECT id, 1, COALESCE(spec->'geometry', '{}'::jsonb) FROM cameras
ON CONFLICT DO NOTHING;
