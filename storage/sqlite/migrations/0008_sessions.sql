-- 0008: dashboard sessions. id is the hex SHA-256 of the session token (the
-- token itself is only in the browser's cookie); secret_hash is the hash of
-- the key secret the session was signed in with, so the session ends when
-- that secret stops working (revocation, expiry, a rotation's grace). Times
-- are Unix nanoseconds. Deleting a key deletes its sessions.
CREATE TABLE sessions (
	id          TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 64),
	key_id      TEXT    NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
	secret_hash TEXT    NOT NULL CHECK (length(secret_hash) = 64),
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL
) STRICT;
-- The sweep of ended sessions.
CREATE INDEX sessions_expires ON sessions(expires_at);
