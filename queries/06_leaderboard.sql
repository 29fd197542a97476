-- Final validation loss of every run of the gpt-125m family, from each run's stitched series.
WITH series AS (SELECT * FROM family_metrics('LP-1', 'val/loss')),
     last   AS (SELECT run_id, max(step) AS step FROM series GROUP BY run_id)
SELECT f.display_id, f.depth, f.fork_step, s.step AS last_step,
       round(s.value, 4) AS final_val_loss,
       rank() OVER (ORDER BY s.value) AS rank
FROM series s
JOIN last l ON l.run_id = s.run_id AND l.step = s.step
JOIN family_runs('LP-1') f ON f.run_id = s.run_id
ORDER BY rank;
