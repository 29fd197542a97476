-- Q6: 1,000-bucket min/max/last downsample of a family's stitched series, for charting.
-- {width} = ceil((max stitched step of the family + 1) / 1000).
SELECT run_id, step / {width} AS bucket,
       min(value) AS min, max(value) AS max,
       last_value(value ORDER BY step) AS last, count(*) AS n
FROM family_metrics('{family}', '{metric}')
GROUP BY run_id, step / {width}
ORDER BY run_id, bucket
