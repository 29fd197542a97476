-- Q2: stitched series of one depth-8 run, every metric.
SELECT metric, step, value
FROM stitched_metrics('{run}')
ORDER BY metric, step
