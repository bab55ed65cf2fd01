-- 0003 (PostgreSQL): one usage row per request, as in sqlite's 0003.
-- request_id is unique so a retried write never counts a request twice.
CREATE TABLE usage (
	request_id        TEXT   NOT NULL PRIMARY KEY,
	key_id            TEXT   NOT NULL,
	endpoint          TEXT   NOT NULL,
	model             TEXT   NOT NULL,
	prompt_tokens     BIGINT NOT NULL,
	completion_tokens BIGINT NOT NULL,
	status            INTEGER NOT NULL,
	latency_us        BIGINT NOT NULL,
	cost_micros       BIGINT NOT NULL,
	created_at        BIGINT NOT NULL
);
CREATE INDEX usage_key_created ON usage(key_id, created_at);
CREATE INDEX usage_created ON usage(created_at);
