-- 0001: the bookkeeping table exists before this runs; this step only marks
-- the database as a Tollgate database.
CREATE TABLE IF NOT EXISTS meta (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
INSERT OR IGNORE INTO meta(name, value) VALUES ('created_by', 'tollgate');
