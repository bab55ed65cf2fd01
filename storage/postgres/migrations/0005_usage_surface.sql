-- 0005 (PostgreSQL): which API a request came through, as in sqlite's 0005.
ALTER TABLE usage ADD COLUMN surface TEXT NOT NULL DEFAULT 'native';
