-- Q7 without table functions: `metrics` joined to the run's segments, in the window.
SELECT m.step, m.value
FROM metrics m
JOIN (VALUES {segments}) AS s(viewer, owner, from_step, to_step)
  ON m.run_id = s.owner AND m.step >= s.from_step AND m.step <= s.to_step
WHERE m.metric = '{metric}' AND m.step BETWEEN {lo} AND {hi}
ORDER BY m.step
