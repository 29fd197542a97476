-- Q6 without table functions: `metrics` joined to the segments of every run of the family.
SELECT s.viewer AS run_id, m.step / {width} AS bucket,
       min(m.value) AS min, max(m.value) AS max,
       last_value(m.value ORDER BY m.step) AS last, count(*) AS n
FROM metrics m
JOIN (VALUES {segments}) AS s(viewer, owner, from_step, to_step)
  ON m.run_id = s.owner AND m.step >= s.from_step AND m.step <= s.to_step
WHERE m.metric = '{metric}'
GROUP BY s.viewer, m.step / {width}
ORDER BY run_id, bucket
