-- Q4 without table functions: `metrics` joined to the segments of every run of the project.
SELECT s.viewer AS run_id, max(m.step) AS step, last_value(m.value ORDER BY m.step) AS value
FROM metrics m
JOIN (VALUES {segments}) AS s(viewer, owner, from_step, to_step)
  ON m.run_id = s.owner AND m.step >= s.from_step AND m.step <= s.to_step
WHERE m.metric = '{metric}'
GROUP BY s.viewer
ORDER BY run_id
