-- Within a session, the score never goes up as the rank goes down the list (ties are fine).
-- Returns the rows whose score exceeds the score of the rank above them.
-- Parameter: ds (date).
SELECT session_id, rank, score, previous_score
FROM (
    SELECT
        session_id,
        rank,
        score,
        LAG(score) OVER (PARTITION BY session_id ORDER BY rank) AS previous_score
    FROM {table}
    WHERE ds = CAST(:ds AS DATE)
) AS ranked
WHERE score > previous_score
ORDER BY session_id, rank
