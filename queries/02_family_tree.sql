-- The lineage tree of the resnet50 family: every fork with its resolved parent and fork step.
SELECT f.display_id, f.name, f.depth, p.display_id AS parent, f.fork_step, f.status
FROM family_runs('VS-1') f
LEFT JOIN runs p ON p.id = f.parent_id
ORDER BY f.run_id;
