-- The service's durable job queue (SQLite). Times are milliseconds since the Unix epoch, taken
-- from the queue's injectable clock, never from the database, so both backends behave alike.
CREATE TABLE queue_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order: claim order and list cursor
    id TEXT NOT NULL UNIQUE,                -- UUID v7
    batch_id TEXT,
    idempotency_key TEXT UNIQUE,            -- a repeated key returns the first job
    payload TEXT NOT NULL,                  -- JSON: what to do
    state TEXT NOT NULL,                    -- queued, running, retrying, succeeded, rejected, dead, cancelled
    attempts INTEGER NOT NULL DEFAULT 0,    -- attempts started
    max_attempts INTEGER NOT NULL,
    run_at INTEGER NOT NULL,                -- not claimed before this (backoff)
    lease_owner TEXT,                       -- while running: who holds it
    lease_token TEXT,                       -- while running: the claim's token (fencing)
    lease_expires_at INTEGER,               -- while running: when the reaper may take it back
    last_error TEXT,                        -- JSON: the last failed attempt
    result TEXT,                            -- JSON: manifest row or rejection, once final
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX queue_jobs_runnable ON queue_jobs (run_at, seq) WHERE state IN ('queued', 'retrying');
CREATE INDEX queue_jobs_leases ON queue_jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX queue_jobs_state ON queue_jobs (state, seq);
CREATE INDEX queue_jobs_batch ON queue_jobs (batch_id, seq);

-- Operator actions on dead letters (replay, purge): who, when, which job.
CREATE TABLE queue_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    job_id TEXT NOT NULL,
    detail TEXT NOT NULL                    -- JSON
);

-- API keys: only a keyed hash of each key is stored (the key itself is shown once, at creation).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,           -- public key id, also the key's prefix
    hash TEXT NOT NULL UNIQUE,              -- hex HMAC-SHA-256 of the whole key
    scopes TEXT NOT NULL,                   -- comma-separated: submit, read, admin
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
