-- Q1: stitched series of one depth-8 run, one metric.
SELECT step, value
FROM stitched_metrics('{run}', '{metric}')
ORDER BY step
