-- The model registry (issue 15, parts 4 and 5): every version of a model the cluster has known
-- and every transition between them. A version is a file of the model directory with its
-- SHA-256: the same file with the same content is the same version on every node. Versions are
-- numbered per model here, once for the whole cluster. The version serving is the `to_version`
-- of the newest `activated` or `rolled_back` transition of the model; nodes apply those made by
-- another node at their heartbeat, in order (this replaces `model_reloads`).
CREATE TABLE IF NOT EXISTS model_versions (
    model      TEXT NOT NULL,
    version    INT NOT NULL CHECK (version > 0),
    -- Relative to the model directory.
    file       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    -- Square network input side the version was validated with (`model.input_size`).
    input_size INT NOT NULL,
    -- fp32, bf16, fp16 or int8: from the file name (`NAME.bf16.pt`, ...; none of them: fp32).
    precision  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version),
    UNIQUE (model, file, sha256)
);

-- activated, rejected, rolled_back, fallback, and a candidate's stages (shadow_started,
-- canary_started, promoted, canary_rolled_back, shadow_stopped): each with the node that made it.
-- Only `activated` and `rolled_back` change the serving version; `rejected` and `fallback`
-- concern the node that wrote them (its file, its devices); other nodes only show them.
CREATE TABLE IF NOT EXISTS model_transitions (
    seq          BIGSERIAL PRIMARY KEY,
    model        TEXT NOT NULL,
    transition   TEXT NOT NULL,
    from_version INT,
    to_version   INT,
    detail       TEXT NOT NULL,
    node         TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS model_transitions_model ON model_transitions (model, seq);

DROP TABLE IF EXISTS model_reloads;
