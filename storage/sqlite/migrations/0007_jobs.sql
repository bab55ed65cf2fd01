-- 0007: async jobs (issue 14), their callback delivery attempts, and each
-- key's webhook signing secret.
-- Times are Unix nanoseconds (UTC); NULL or 0 means not set.
-- request_id is the gateway request id of the current (or last) run: the
-- id of its usage row. attempt numbers the runs (request_id = id-attempt).
-- owner is the current run's token (fencing: a run that outlived its lease
-- cannot finish a job its successor holds); lease_until ends a run that
-- died with its process.
CREATE TABLE jobs (
	id               TEXT    NOT NULL PRIMARY KEY,
	key_id           TEXT    NOT NULL,
	endpoint         TEXT    NOT NULL,
	request          TEXT    NOT NULL,
	callback_url     TEXT    NOT NULL DEFAULT '',
	status           TEXT    NOT NULL CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
	request_id       TEXT    NOT NULL DEFAULT '',
	attempt          INTEGER NOT NULL DEFAULT 0,
	retries          INTEGER NOT NULL DEFAULT 0,
	recovered        INTEGER NOT NULL DEFAULT 0,
	run_after        INTEGER NOT NULL,
	owner            TEXT    NOT NULL DEFAULT '',
	lease_until      INTEGER NOT NULL DEFAULT 0,
	result           TEXT,
	error            TEXT,
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	created_at       INTEGER NOT NULL,
	started_at       INTEGER NOT NULL DEFAULT 0,
	finished_at      INTEGER NOT NULL DEFAULT 0,
	delivery         TEXT    NOT NULL DEFAULT '',
	next_delivery_at INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX jobs_queue ON jobs(run_after) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs(lease_until) WHERE status = 'running';
CREATE INDEX jobs_delivery ON jobs(next_delivery_at) WHERE delivery = 'pending';
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE status IN ('succeeded','failed','cancelled');

CREATE TABLE job_deliveries (
	job_id  TEXT    NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
	attempt INTEGER NOT NULL,
	at      INTEGER NOT NULL,
	status  INTEGER NOT NULL,
	error   TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (job_id, attempt)
) STRICT;

-- The secret itself: it must be recoverable to sign with. It is stored as
-- is (like the database's other contents, protected by the file's
-- permissions); README says so.
CREATE TABLE webhook_secrets (
	key_id     TEXT    NOT NULL PRIMARY KEY REFERENCES keys(id) ON DELETE CASCADE,
	secret     TEXT    NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
