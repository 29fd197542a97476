-- What the stitched view of VS-6 is made of: own points versus points inherited from ancestors.
SELECT metric,
       count(*)                                  AS points,
       sum(CASE WHEN inherited THEN 1 ELSE 0 END) AS inherited_points,
       count(DISTINCT source_run_id)             AS owners,
       min(step)                                 AS first_step,
       max(step)                                 AS last_step
FROM stitched_metrics('VS-6')
GROUP BY metric
ORDER BY metric;
