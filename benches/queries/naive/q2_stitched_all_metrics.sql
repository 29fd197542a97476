-- Q2 without table functions: `metrics` joined to the run's segments.
SELECT m.metric, m.step, m.value
FROM metrics m
JOIN (VALUES {segments}) AS s(viewer, owner, from_step, to_step)
  ON m.run_id = s.owner AND m.step >= s.from_step AND m.step <= s.to_step
ORDER BY m.metric, m.step
