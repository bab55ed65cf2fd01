-- 0004 (PostgreSQL): a key has at most one current secret (expires_at NULL),
-- as in sqlite's 0004. No PostgreSQL database predates the rule (tollgate
-- migrate copies from a SQLite file already at it), so only the index.
CREATE UNIQUE INDEX key_secrets_current ON key_secrets(key_id) WHERE expires_at IS NULL;
