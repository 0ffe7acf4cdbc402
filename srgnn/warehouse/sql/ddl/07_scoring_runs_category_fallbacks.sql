-- scoring_runs.category_fallbacks: sessions whose last click is on an item the model does not
-- know, of a category it does, answered with that category's popular items
-- (model_version 'fallback:category'); they are also counted in `fallbacks`.
-- Added after the table's first release: ADD COLUMN IF NOT EXISTS upgrades a warehouse made
-- before it, and does nothing on one that has it. Older runs keep NULL. PostgreSQL has its
-- own file, which alters the table only when the column is missing.
ALTER TABLE scoring_runs ADD COLUMN IF NOT EXISTS category_fallbacks BIGINT
