-- The dispatch example's schema (testlane builds a template from it once; each test gets a clone).

-- Queues have case-insensitively unique names: "Billing" and "billing" are the same queue.
CREATE TABLE queues (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    owner text NOT NULL
);
CREATE UNIQUE INDEX queues_name_ci ON queues (lower(name));

-- A row per job waiting to be dispatched; dispatching a job *claims* it: DELETE ... RETURNING.
CREATE TABLE pending_jobs (
    id text PRIMARY KEY,
    queue text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    due_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_jobs_due ON pending_jobs (queue, due_at);

-- The wake index: which waits reference which entities. One row per (wait, ref), however many
-- writers register it at once (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE wake_index (
    wait_id text NOT NULL,
    ref text NOT NULL,
    PRIMARY KEY (wait_id, ref)
);
CREATE INDEX wake_index_ref ON wake_index (ref);

-- Recurring schedules belong to an owner; only the owner may delete one.
CREATE TABLE schedules (
    id bigserial PRIMARY KEY,
    queue_id bigint NOT NULL REFERENCES queues ON DELETE CASCADE,
    owner text NOT NULL,
    cron text NOT NULL
);

-- Maintenance windows pause a queue; ends_at NULL is a window still open. Half-open: [starts_at, ends_at).
CREATE TABLE maintenance_windows (
    id bigserial PRIMARY KEY,
    queue_id bigint NOT NULL REFERENCES queues ON DELETE CASCADE,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz,
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);

-- Used only by dispatch.broken.TableLocks, the lock-table mistake the seam tests catch.
CREATE TABLE dispatch_locks (
    name text PRIMARY KEY,
    holder_pid int NOT NULL
);
