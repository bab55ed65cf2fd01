-- 0004: a key has at most two secrets: its current one (expires_at NULL) and
-- the one its last rotation replaced (expires_at = the end of its grace
-- period). Rotations keep it so, deleting every older secret (issue 12);
-- this step brings databases written before that to the same state.

-- One current secret per key. Rotations always had only one; should a key
-- have more, the newest stays current and the others end at their creation.
UPDATE key_secrets SET expires_at = created_at
WHERE expires_at IS NULL AND EXISTS (
	SELECT 1 FROM key_secrets newer
	WHERE newer.key_id = key_secrets.key_id AND newer.expires_at IS NULL
	  AND (newer.created_at > key_secrets.created_at
	       OR (newer.created_at = key_secrets.created_at AND newer.rowid > key_secrets.rowid)));

-- Of the rest, only the newest: older ones were replaced before the last
-- rotation, and some may still be in a grace period of their own (repeated
-- self-rotations left one live secret per rotation).
DELETE FROM key_secrets
WHERE expires_at IS NOT NULL AND EXISTS (
	SELECT 1 FROM key_secrets newer
	WHERE newer.key_id = key_secrets.key_id AND newer.expires_at IS NOT NULL
	  AND (newer.created_at > key_secrets.created_at
	       OR (newer.created_at = key_secrets.created_at AND newer.rowid > key_secrets.rowid)));

-- The database keeps the first rule itself; a self-rotation's "is this the
-- current secret?" relies on there being one.
CREATE UNIQUE INDEX key_secrets_current ON key_secrets(key_id) WHERE expires_at IS NULL;
