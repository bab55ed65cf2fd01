-- 0002: API keys, their secrets and the audit trail.
-- Times are Unix nanoseconds (UTC) in INTEGER columns, as in usage; NULL
-- means "not set" (no expiry, not revoked, never used).
-- No secret is ever stored: key_secrets.hash is the hex SHA-256 of a key and
-- prefix its first 11 characters (tg_ + 8), safe to show.
CREATE TABLE keys (
	id                  TEXT    NOT NULL PRIMARY KEY,
	name                TEXT    NOT NULL,
	prefix              TEXT    NOT NULL,       -- display prefix of the current secret
	scopes              TEXT    NOT NULL,       -- comma list: generate,embed,predict,admin
	models              TEXT    NOT NULL DEFAULT '', -- comma list; '' = every model
	plan                TEXT    NOT NULL DEFAULT '',
	requests_per_second REAL    NOT NULL DEFAULT 0, -- limits: 0 = unlimited / from plan
	burst               INTEGER NOT NULL DEFAULT 0,
	tokens_per_minute   INTEGER NOT NULL DEFAULT 0,
	max_concurrent      INTEGER NOT NULL DEFAULT 0,
	monthly_tokens      INTEGER NOT NULL DEFAULT 0,
	monthly_requests    INTEGER NOT NULL DEFAULT 0,
	expires_at          INTEGER,
	revoked_at          INTEGER,
	last_used_at        INTEGER,
	created_at          INTEGER NOT NULL
) STRICT;

-- Every secret a key has had. A rotation adds a row and gives the older rows
-- an expires_at (now + grace); a key id is stable across rotations.
CREATE TABLE key_secrets (
	hash       TEXT    NOT NULL PRIMARY KEY CHECK (length(hash) = 64),
	key_id     TEXT    NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
	prefix     TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER
) STRICT;
CREATE INDEX key_secrets_key ON key_secrets(key_id);

-- Who (a key id, or 'cli') did what to which key, when. No foreign key: the
-- trail outlives the key. detail never holds a secret or a hash.
CREATE TABLE audit (
	id     INTEGER PRIMARY KEY,
	at     INTEGER NOT NULL,
	actor  TEXT    NOT NULL,
	action TEXT    NOT NULL,
	key_id TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_key_at ON audit(key_id, at);
