-- The first violations of one data-quality check, shown in the error of a failed load.
-- The check placeholder below is replaced by the text of a file in checks/ (whose table is
-- already filled in); it stands on a line of its own so that a comment on the check's last
-- line cannot swallow the closing parenthesis. The check's own ORDER BY picks the rows shown.
-- Parameters: limit (rows to show), and those of the check (ds, expected_k, expected_rows).
SELECT *
FROM (
{check}
) AS violations
LIMIT :limit
