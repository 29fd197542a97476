-- Runs, families and stored points per project (plain tables, no stitching).
SELECT r.project,
       count(DISTINCT r.id)         AS runs,
       count(DISTINCT r.experiment) AS families,
       sum(p.points)                AS points
FROM runs r
LEFT JOIN (SELECT run_id, count(*) AS points FROM metrics GROUP BY run_id) p ON p.run_id = r.id
GROUP BY r.project
ORDER BY r.project;
