-- 0010: usage for billing. Each usage row keeps the account its key had
-- when the request was made (a key may move to another account later; its
-- past usage stays billed where it was made), and a sequence number in
-- commit order, seq, which the Stripe exporter's cursor follows. seq is an
-- INTEGER PRIMARY KEY AUTOINCREMENT: VACUUM never renumbers it, and a seq is
-- never handed out twice, even after the newest rows were deleted
-- (archived); SQLite has one writer, so a row that is not yet committed
-- always gets a larger seq than every committed one. The table is rebuilt to
-- add it; rows from before take their key's current account.
CREATE TABLE usage_new (
	seq               INTEGER PRIMARY KEY AUTOINCREMENT,
	request_id        TEXT    NOT NULL UNIQUE,
	key_id            TEXT    NOT NULL,
	endpoint          TEXT    NOT NULL,
	model             TEXT    NOT NULL,
	prompt_tokens     INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	status            INTEGER NOT NULL,
	latency_us        INTEGER NOT NULL,
	cost_micros       INTEGER NOT NULL,
	created_at        INTEGER NOT NULL,
	surface           TEXT    NOT NULL DEFAULT 'native',
	account_id        TEXT    NOT NULL DEFAULT ''
);
INSERT INTO usage_new (request_id, key_id, endpoint, model, prompt_tokens, completion_tokens,
	status, latency_us, cost_micros, created_at, surface, account_id)
SELECT u.request_id, u.key_id, u.endpoint, u.model, u.prompt_tokens, u.completion_tokens,
	u.status, u.latency_us, u.cost_micros, u.created_at, u.surface, COALESCE(k.account_id, '')
FROM usage u LEFT JOIN keys k ON k.id = u.key_id
ORDER BY u.rowid;
DROP TABLE usage;
ALTER TABLE usage_new RENAME TO usage;
CREATE INDEX usage_key_created ON usage(key_id, created_at);
CREATE INDEX usage_created ON usage(created_at);
CREATE INDEX usage_account_created ON usage(account_id, created_at) WHERE account_id != '';

-- The state of a usage exporter (name "stripe"): everything up to the
-- cursor is exported (rows with seq < cursor_seq and created_at <
-- cursor_before); a pending batch (pending_*) is being sent and is sent
-- again, identically, after a crash; the lease says which process exports;
-- epoch is mixed into every event identifier (new after tollgate migrate,
-- where sequence numbers change meaning). Times are Unix nanoseconds.
CREATE TABLE billing_exports (
	name             TEXT    NOT NULL PRIMARY KEY,
	cursor_before    INTEGER NOT NULL,
	cursor_seq       INTEGER NOT NULL,
	pending_before   INTEGER,
	pending_seq      INTEGER,
	pending_interval INTEGER,
	owner            TEXT    NOT NULL DEFAULT '',
	lease_until      INTEGER NOT NULL DEFAULT 0,
	last_export_at   INTEGER NOT NULL DEFAULT 0,
	last_error       TEXT    NOT NULL DEFAULT '',
	last_error_at    INTEGER NOT NULL DEFAULT 0,
	events_sent      INTEGER NOT NULL DEFAULT 0,
	batches          INTEGER NOT NULL DEFAULT 0,
	epoch            TEXT    NOT NULL DEFAULT ''
) STRICT;

-- The events of the pending batch the billing system has accepted, so that
-- a resend after a restart skips them even past the billing system's own
-- deduplication window. Emptied when the batch is done.
CREATE TABLE billing_sent (
	name       TEXT NOT NULL,
	identifier TEXT NOT NULL,
	PRIMARY KEY (name, identifier)
) STRICT;
