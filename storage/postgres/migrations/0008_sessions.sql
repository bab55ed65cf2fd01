-- 0008 (PostgreSQL): dashboard sessions, as in sqlite's 0008. id is the hex
-- SHA-256 of the session token (the token itself is only in the browser's
-- cookie); secret_hash is the hash of the key secret the session was signed
-- in with. Times are Unix nanoseconds. Deleting a key deletes its sessions.
CREATE TABLE sessions (
	id          TEXT   NOT NULL PRIMARY KEY CHECK (length(id) = 64),
	key_id      TEXT   NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
	secret_hash TEXT   NOT NULL CHECK (length(secret_hash) = 64),
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions(expires_at);
