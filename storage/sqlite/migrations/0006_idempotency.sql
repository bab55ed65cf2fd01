-- 0006: Idempotency-Key records, one per (API key id, Idempotency-Key):
-- the first request's fingerprint (method, path, SHA-256 of the body), who
-- holds it while it runs (owner: its request id), and once done the answer
-- to replay (status, a few headers as JSON, the body sealed with a key
-- derived from the caller's secret). Times are Unix nanoseconds. Rows older
-- than 24 h are purged when a key is claimed. No foreign key to keys, as
-- for usage.
CREATE TABLE idempotency (
	key_id      TEXT    NOT NULL,
	idem_key    TEXT    NOT NULL,
	fingerprint TEXT    NOT NULL,
	owner       TEXT    NOT NULL,
	state       TEXT    NOT NULL CHECK (state IN ('in_progress', 'done')),
	status      INTEGER NOT NULL DEFAULT 0,
	headers     TEXT    NOT NULL DEFAULT '{}',
	body        BLOB,
	created_at  INTEGER NOT NULL,
	PRIMARY KEY (key_id, idem_key)
);
-- The purge of expired records.
CREATE INDEX idempotency_created ON idempotency(created_at);
