-- The JobFinished event of a job, kept with its final state so that a redelivery of a
-- finished job (the orchestrator died after recording the end, before publishing it)
-- can send the source the event it may have missed.
ALTER TABLE jobs ADD COLUMN final_event TEXT;
