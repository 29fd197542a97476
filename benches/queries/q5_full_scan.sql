-- Q5: full-scan aggregate over every stored point.
SELECT metric, count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
FROM metrics
GROUP BY metric
ORDER BY metric
