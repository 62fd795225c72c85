-- Each hot row keeps its plotted numbers beside its JSON: `plotted` holds the section's
-- plotted fields (exporter/storage/fields.py) in their rollup order, NULL where a field
-- is absent. A history series of those fields reads them from here and parses no JSON:
-- at 1,000 hosts at 1 s a 24 h series of one host's last minutes spent most of its time
-- in orjson (bench/README.md, "fleet"). Rows from before this migration, and sections
-- without plotted fields, have NULL and are read from their JSON as before. A nullable
-- column without a default changes only the catalog: no partition is rewritten.
ALTER TABLE metrics_snapshots ADD COLUMN plotted float8[];
