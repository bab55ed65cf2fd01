-- 0003: one usage row per request that reached inference; billing reads it.
-- request_id is unique so a retried write never counts a request twice.
-- created_at is Unix time in nanoseconds (UTC), an integer so that ranges
-- and month boundaries are plain index range scans. No foreign key to keys:
-- usage outlives a deleted key and must never fail to record because of it.
CREATE TABLE usage (
	request_id        TEXT    NOT NULL PRIMARY KEY,
	key_id            TEXT    NOT NULL,
	endpoint          TEXT    NOT NULL,
	model             TEXT    NOT NULL,
	prompt_tokens     INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	status            INTEGER NOT NULL,
	latency_us        INTEGER NOT NULL,
	cost_micros       INTEGER NOT NULL,
	created_at        INTEGER NOT NULL
);
-- A key's usage over a time range (GET /usage, quota seeding per key).
CREATE INDEX usage_key_created ON usage(key_id, created_at);
-- Everyone's usage over a time range (admin reports, export, month seeding).
CREATE INDEX usage_created ON usage(created_at);
