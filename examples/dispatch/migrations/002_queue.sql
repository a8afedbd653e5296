-- Jobs handled from the JetStream queue (dispatch.queue). completed_jobs has a row per job done,
-- whoever did it: its primary key makes a second finisher (a redelivery after a stall) a no-op.
CREATE TABLE completed_jobs (
    id text PRIMARY KEY,
    worker text NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now()
);

-- The job's effect (an invoice sent, a webhook called): must happen once per job, however often the
-- job is delivered. dispatch.queue.complete writes it in the transaction that inserts completed_jobs.
CREATE TABLE job_effects (
    job_id text NOT NULL,
    worker text NOT NULL
);

-- What each queue worker process took: a row per delivery, finished_at set once it acked (python -m dispatch.queue_worker writes it; the
-- seam tests read it to see what a worker process received).
CREATE TABLE job_attempts (
    job_id text NOT NULL,
    worker text NOT NULL,
    delivery int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
