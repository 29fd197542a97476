-- Segments of the deepest run's stitched view, root first (to_step is open for the run itself).
SELECT * FROM lineage('VS-6');
