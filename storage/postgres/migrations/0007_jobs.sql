-- 0007 (PostgreSQL): async jobs, their callback delivery attempts, and each
-- key's webhook signing secret, as in sqlite's 0007. Times are Unix
-- nanoseconds (UTC); 0 or NULL means not set.
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
	recovered        BOOLEAN NOT NULL DEFAULT FALSE,
	run_after        BIGINT  NOT NULL,
	owner            TEXT    NOT NULL DEFAULT '',
	lease_until      BIGINT  NOT NULL DEFAULT 0,
	result           TEXT,
	error            TEXT,
	cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
	created_at       BIGINT  NOT NULL,
	started_at       BIGINT  NOT NULL DEFAULT 0,
	finished_at      BIGINT  NOT NULL DEFAULT 0,
	delivery         TEXT    NOT NULL DEFAULT '',
	next_delivery_at BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queue ON jobs(run_after) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs(lease_until) WHERE status = 'running';
CREATE INDEX jobs_delivery ON jobs(next_delivery_at) WHERE delivery = 'pending';
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE status IN ('succeeded','failed','cancelled');

CREATE TABLE job_deliveries (
	job_id  TEXT    NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
	attempt INTEGER NOT NULL,
	at      BIGINT  NOT NULL,
	status  INTEGER NOT NULL,
	error   TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (job_id, attempt)
);

CREATE TABLE webhook_secrets (
	key_id     TEXT   NOT NULL PRIMARY KEY REFERENCES keys(id) ON DELETE CASCADE,
	secret     TEXT   NOT NULL,
	created_at BIGINT NOT NULL
);
