-- Callbacks: a job submitted with a callback URL has its final state POSTed there. Additive, so
-- a build that knows only version 1 keeps working (it never sets these columns).
ALTER TABLE queue_jobs ADD COLUMN callback_url TEXT;
ALTER TABLE queue_jobs ADD COLUMN callback_state TEXT;            -- pending, delivered, failed
ALTER TABLE queue_jobs ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_jobs ADD COLUMN callback_next_at INTEGER;       -- not tried before this (backoff, or a sender's lease)
ALTER TABLE queue_jobs ADD COLUMN callback_error TEXT;            -- the last failed delivery
CREATE INDEX queue_jobs_callbacks ON queue_jobs (callback_next_at) WHERE callback_state = 'pending';
