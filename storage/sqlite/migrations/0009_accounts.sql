-- 0009: subscriber accounts and monthly money budgets. An account owns keys (keys.account_id, NULL for
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
	monthly_budget     INTEGER NOT NULL DEFAULT 0, -- micro-units of the catalog's currency
	created_at         INTEGER NOT NULL
) STRICT;
ALTER TABLE keys ADD COLUMN account_id TEXT REFERENCES accounts(id);
-- A key's monthly budget, in micro-units of the catalog's currency (0: none / from its plan).
ALTER TABLE keys ADD COLUMN monthly_budget INTEGER NOT NULL DEFAULT 0;
CREATE INDEX keys_account ON keys(account_id);
