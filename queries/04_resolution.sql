-- Forks requested on a run at a step inside an ancestor's segment: lineage resolution attached
-- them to that ancestor. Fork names read `<family>/<requested run>@<step>`.
SELECT r.display_id, r.name AS requested_as, p.display_id AS resolved_parent, r.fork_step
FROM runs r
JOIN runs p ON p.id = r.parent_id
WHERE r.name NOT LIKE '%/' || p.display_id || '@%'
ORDER BY r.id;
