-- Q4: leaderboard: the last stitched point of one metric for every run of project `bench`.
SELECT run_id, max(step) AS step, last_value(value ORDER BY step) AS value
FROM project_metrics('bench', '{metric}')
GROUP BY run_id
ORDER BY run_id
