-- Training loss of the baseline and of its lr x0.3 fork (VS-2, forked at step 6000), averaged per 2000 steps.
SELECT (m.step / 2000) * 2000 AS steps_from,
       round(avg(CASE WHEN f.display_id = 'VS-1' THEN m.value END), 4) AS baseline,
       round(avg(CASE WHEN f.display_id = 'VS-2' THEN m.value END), 4) AS fork_vs_2
FROM family_metrics('VS-1', 'train/loss') m
JOIN family_runs('VS-1') f ON f.run_id = m.run_id
WHERE f.display_id IN ('VS-1', 'VS-2')
GROUP BY 1
ORDER BY 1;
