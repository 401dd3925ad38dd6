-- A lease on a claimed job: which engine instance runs it (`lease_holder`, the
-- orchestrator's name plus a per-process id) and until when (`lease_until`, Unix
-- milliseconds), renewed while it runs. A redelivery of a job whose lease is live is
-- held, not run; one whose lease expired (its orchestrator died) is taken over.
-- Rows claimed before this migration have no lease, so they can be claimed as before.
ALTER TABLE jobs ADD COLUMN lease_holder TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
