-- 0010 (PostgreSQL): usage for billing, as in sqlite's 0010. Each usage row
-- keeps the account its key had when the request was made. The Stripe
-- exporter's cursor follows txid, the id of the transaction that inserted
-- the row: every row whose txid is below the oldest transaction still
-- running (pg_snapshot_xmin) is committed and final, however many replicas
-- insert at once, which a sequence (assigned at insert, not at commit)
-- would not give. Rows from before take their key's current account (only
-- rows of keys in an account, which 0009 introduced, are rewritten).
ALTER TABLE usage ADD COLUMN account_id TEXT NOT NULL DEFAULT '';
-- Rows from before get txid 3 (the first normal transaction id: committed
-- long ago), a constant default, so no table rewrite; new rows get theirs.
ALTER TABLE usage ADD COLUMN txid xid8 NOT NULL DEFAULT '3';
ALTER TABLE usage ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
UPDATE usage u SET account_id = k.account_id FROM keys k WHERE k.id = u.key_id AND k.account_id IS NOT NULL;
CREATE INDEX usage_account_created ON usage(account_id, created_at) WHERE account_id != '';
CREATE INDEX usage_txid ON usage(txid);

-- The state of a usage exporter, as in sqlite's 0010; cursor_seq and
-- pending_seq are txids.
CREATE TABLE billing_exports (
	name             TEXT   NOT NULL PRIMARY KEY,
	cursor_before    BIGINT NOT NULL,
	cursor_seq       BIGINT NOT NULL,
	pending_before   BIGINT,
	pending_seq      BIGINT,
	pending_interval BIGINT,
	owner            TEXT   NOT NULL DEFAULT '',
	lease_until      BIGINT NOT NULL DEFAULT 0,
	last_export_at   BIGINT NOT NULL DEFAULT 0,
	last_error       TEXT   NOT NULL DEFAULT '',
	last_error_at    BIGINT NOT NULL DEFAULT 0,
	events_sent      BIGINT NOT NULL DEFAULT 0,
	batches          BIGINT NOT NULL DEFAULT 0,
	epoch            TEXT   NOT NULL DEFAULT ''
);

-- The events of the pending batch already accepted, as in sqlite's 0010.
CREATE TABLE billing_sent (
	name       TEXT NOT NULL,
	identifier TEXT NOT NULL,
	PRIMARY KEY (name, identifier)
);
