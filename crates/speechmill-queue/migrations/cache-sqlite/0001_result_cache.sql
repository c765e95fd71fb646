-- The result cache of `speechmill process` (a SQLite file of its own, under the user's cache
-- folder): the same table as the service queue's migration 0003, keyed by the SHA-256 of a
-- clip's decoded content, the configuration that shapes it and speechmill's version.
CREATE TABLE result_cache (
    key TEXT PRIMARY KEY,             -- hex SHA-256 (content, configuration, version)
    version TEXT NOT NULL,            -- speechmill's version that wrote it
    config_hash TEXT NOT NULL,        -- hash of the configuration that shapes the result
    value TEXT NOT NULL,              -- the cached outcome, JSON
    audio BLOB,                       -- the encoded audio of an accepted clip
    bytes INTEGER NOT NULL,           -- size of value and audio, for stats and pruning
    created_at INTEGER NOT NULL,      -- ms since the epoch
    used_at INTEGER NOT NULL          -- last stored or hit, ms since the epoch
);
CREATE INDEX result_cache_used ON result_cache (used_at);
