-- The job model shared by the batch job and the service: one row per clip to process.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,          -- stable clip id, also the output file stem
    seq INTEGER NOT NULL UNIQUE,           -- input order (inputs sorted by path): decides duplicates
    source TEXT NOT NULL,                  -- the input as the user named it
    spec TEXT NOT NULL,                    -- JSON: what to process (path, raw format, carried columns)
    state TEXT NOT NULL,                   -- queued, running, retrying, succeeded, rejected, dead, cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,                           -- JSON: the manifest row or the rejection, once final
    reason TEXT,                           -- rejection reason code, once final
    content_hash TEXT,                     -- hash of the decoded audio, for exact duplicates
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX jobs_state_seq ON jobs (state, seq);

-- Facts about the run: configuration hash, versions. One row per key.
CREATE TABLE run_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
