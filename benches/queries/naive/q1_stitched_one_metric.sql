-- Q1 without table functions: `metrics` joined to the run's segments
-- (viewer, owner, from_step, to_step); the open end is to_step = i64::MAX.
SELECT m.step, m.value
FROM metrics m
JOIN (VALUES {segments}) AS s(viewer, owner, from_step, to_step)
  ON m.run_id = s.owner AND m.step >= s.from_step AND m.step <= s.to_step
WHERE m.metric = '{metric}'
ORDER BY m.step
