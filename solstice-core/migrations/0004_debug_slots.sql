-- The one machine a repository may keep for debug SSH at a time, across every
-- orchestrator sharing this store: which job holds it, for which orchestrator, and
-- until when (Unix milliseconds; the kept machine's time to live and a margin), so
-- that a slot whose orchestrator died frees itself.
CREATE TABLE debug_slots (
    repository TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
