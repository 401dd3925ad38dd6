-- Job state and VM records. Portable between SQLite and PostgreSQL: only TEXT and
-- BIGINT columns (timestamps are Unix milliseconds), so one query set serves both.
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    name         TEXT NOT NULL,
    route_label  TEXT NOT NULL,
    state        TEXT NOT NULL,
    result       TEXT,
    attempt      BIGINT NOT NULL DEFAULT 0,
    owner        TEXT,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT
);

CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);

CREATE TABLE IF NOT EXISTS vms (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    pid         BIGINT,
    ssh_port    BIGINT,
    files       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS vms_owner ON vms (owner);
