-- planflow schema 12 (SQLite): nothing to do. On PostgreSQL this version partitions planflow_history by time
-- so that purge can drop old partitions; SQLite has no table partitioning, and a SQLite store's history is
-- purged row by row with its workflows (the foreign key's cascade), as before. The file exists so that both
-- drivers keep the same numbered versions.
SELECT 1;
