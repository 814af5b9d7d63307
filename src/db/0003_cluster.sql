-- The cluster: members, camera leases with fencing tokens, and the revision that tells nodes
-- the set of cameras changed. Times are PostgreSQL's own (now()), so nodes' clocks never compare.

-- One row per node id. A node is live while heartbeat_at is younger than the TTL; live_since
-- restarts when a heartbeat follows a gap longer than the TTL (hysteresis: a node counts in the
-- assignment only once it has been live for cluster.settle_ms). `incarnation` tells apart two
-- processes that claim one id.
CREATE TABLE IF NOT EXISTS cluster_nodes (
    id            TEXT PRIMARY KEY,
    incarnation   TEXT NOT NULL,
    state         TEXT NOT NULL,            -- live, draining, left
    capacity_fps  DOUBLE PRECISION NOT NULL,
    load_fps      DOUBLE PRECISION NOT NULL DEFAULT 0,
    cameras       INT NOT NULL DEFAULT 0,
    advertise_url TEXT NOT NULL DEFAULT '',
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    live_since    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The lease of each running camera. `token` grows with every acquisition (fencing): a node
-- renews only the tokens it holds, so a lease taken over by another node is never renewed by
-- the old one.
CREATE SEQUENCE IF NOT EXISTS camera_lease_tokens;
CREATE TABLE IF NOT EXISTS camera_leases (
    camera_id   TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    token       BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS camera_leases_node ON camera_leases (node_id);

-- Every acquisition and its end: who analysed which camera when (moves, double-analysis checks).
CREATE TABLE IF NOT EXISTS camera_lease_log (
    token       BIGINT PRIMARY KEY,
    camera_id   TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    released_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS camera_lease_log_camera ON camera_lease_log (camera_id, acquired_at);

-- Bumped in the transaction of every camera registration, removal and geometry change, and
-- model reload request; nodes re-read the cameras only when it moved.
CREATE TABLE IF NOT EXISTS cluster_revision (
    one      BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    cameras  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO cluster_revision (one) VALUES (true) ON CONFLICT DO NOTHING;

-- Model reloads asked of the cluster: every node applies each once, in order.
CREATE TABLE IF NOT EXISTS model_reloads (
    seq          BIGSERIAL PRIMARY KEY,
    model        TEXT NOT NULL,
    file         TEXT,
    requested_by TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
