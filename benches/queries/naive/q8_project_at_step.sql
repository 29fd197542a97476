-- Q8 without table functions: `metrics` joined to the segments of every run of the project, at one step.
SELECT s.viewer AS run_id, m.value
FROM metrics m
JOIN (VALUES {segments}) AS s(viewer, owner, from_step, to_step)
  ON m.run_id = s.owner AND m.step >= s.from_step AND m.step <= s.to_step
WHERE m.metric = '{metric}' AND m.step = {step}
ORDER BY run_id
