-- How many violations one data-quality check found, once check_sample.sql returned some.
-- The check placeholder below is replaced as in check_sample.sql.
-- Parameters: those of the check (ds, expected_k, expected_rows).
SELECT COUNT(*) AS total
FROM (
{check}
) AS violations
