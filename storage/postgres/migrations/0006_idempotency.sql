-- 0006 (PostgreSQL): Idempotency-Key records, as in sqlite's 0006.
CREATE TABLE idempotency (
	key_id      TEXT    NOT NULL,
	idem_key    TEXT    NOT NULL,
	fingerprint TEXT    NOT NULL,
	owner       TEXT    NOT NULL,
	state       TEXT    NOT NULL CHECK (state IN ('in_progress', 'done')),
	status      INTEGER NOT NULL DEFAULT 0,
	headers     TEXT    NOT NULL DEFAULT '{}',
	body        BYTEA,
	created_at  BIGINT  NOT NULL,
	PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_created ON idempotency(created_at);
