-- 0009: subscriber accounts. An account owns keys (keys.account_id, NULL for
-- a key without one) and has monthly quotas shared by all its keys; only the
-- monthly limits apply to an account (0 = unlimited / from its plan). Times
-- are Unix nanoseconds. Audit rows of account changes (action account.*)
-- carry the account id in audit.key_id.
CREATE TABLE accounts (
	id                 TEXT    NOT NULL PRIMARY KEY,
	name               TEXT    NOT NULL,
	stripe_customer_id TEXT    NOT NULL DEFAULT '',
	plan               TEXT    NOT NULL DEFAULT '',
	monthly_tokens     INTEGER NOT NULL DEFAULT 0,
	monthly_requests   INTEGER NOT NULL DEFAULT 0,
	created_at         INTEGER NOT NULL
) STRICT;
ALTER TABLE keys ADD COLUMN account_id TEXT REFERENCES accounts(id);
CREATE INDEX keys_account ON keys(account_id);
