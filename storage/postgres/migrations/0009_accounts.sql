-- 0009 (PostgreSQL): subscriber accounts and monthly money budgets, as in sqlite's 0009. An account
-- owns keys (keys.account_id, NULL for a key without one) and has monthly
-- quotas shared by all its keys. Times are Unix nanoseconds. Audit rows of
-- account changes (action account.*) carry the account id in audit.key_id.
CREATE TABLE accounts (
	id                 TEXT   NOT NULL PRIMARY KEY,
	name               TEXT   NOT NULL,
	stripe_customer_id TEXT   NOT NULL DEFAULT '',
	plan               TEXT   NOT NULL DEFAULT '',
	monthly_tokens     BIGINT NOT NULL DEFAULT 0,
	monthly_requests   BIGINT NOT NULL DEFAULT 0,
	monthly_budget     BIGINT NOT NULL DEFAULT 0, -- micro-units of the catalog's currency
	created_at         BIGINT NOT NULL
);
ALTER TABLE keys ADD COLUMN account_id TEXT REFERENCES accounts(id);
-- A key's monthly budget, in micro-units of the catalog's currency (0: none / from its plan).
ALTER TABLE keys ADD COLUMN monthly_budget BIGINT NOT NULL DEFAULT 0;
CREATE INDEX keys_account ON keys(account_id);
