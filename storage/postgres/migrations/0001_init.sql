-- 0001 (PostgreSQL): the bookkeeping table exists before this runs; this step
-- only marks the database as a Tollgate database. Mirrors sqlite's 0001.
CREATE TABLE IF NOT EXISTS meta (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
INSERT INTO meta(name, value) VALUES ('created_by', 'tollgate') ON CONFLICT (name) DO NOTHING;
