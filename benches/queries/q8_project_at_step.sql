-- Q8: every run's stitched value of one metric at one step, across project `bench`
-- ({step} = 2,000: every run's stitched view holds it).
SELECT run_id, value
FROM project_metrics('bench', '{metric}')
WHERE step = {step}
ORDER BY run_id
