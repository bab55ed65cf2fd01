-- 0005: which API a request came through (native, openai, ollama), so the
-- operator can see which surface a subscriber uses. Rows from before are
-- native: it was the only one.
ALTER TABLE usage ADD COLUMN surface TEXT NOT NULL DEFAULT 'native';
