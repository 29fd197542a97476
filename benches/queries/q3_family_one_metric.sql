-- Q3: every run of a 100-run family, each with its own stitched series of one metric.
SELECT run_id, step, value
FROM family_metrics('{family}', '{metric}')
ORDER BY run_id, step
