-- Q7: zoom: 300 steps of one metric of a depth-8 run, across its fork boundary.
-- {lo} = the first step of the run's own segment - 150, {hi} = {lo} + 299.
SELECT step, value
FROM stitched_metrics('{run}', '{metric}')
WHERE step BETWEEN {lo} AND {hi}
ORDER BY step
