-- Cameras: the source of truth for what runs. `spec` is the registration body (URL with any
-- credentials, which the API never returns).
CREATE TABLE IF NOT EXISTS cameras (
    id          TEXT PRIMARY KEY,
    spec        JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events: one row per event; the deterministic event id makes replays idempotent.
CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT PRIMARY KEY,
    camera_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    frame_seq   BIGINT NOT NULL,
    track_id    BIGINT NOT NULL,
    class       TEXT NOT NULL,
    line_id     TEXT NOT NULL,
    direction   TEXT NOT NULL,
    payload     JSONB NOT NULL,
    inserted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_camera_ts ON events (camera_id, ts);
