-- planflow schema 12 (PostgreSQL): planflow_history range-partitioned by recorded_at.
--
-- Conversion of the existing table, in the migration's one transaction: the old table is renamed and attached
-- whole as the first partition (planflow_history_before_YYYYMMDD, from MINVALUE to the next UTC midnight after
-- both now and its newest record); no row is copied. Its primary key, indexes and foreign key are taken over by
-- the partitioned table's (same definitions), so the only work proportional to the rows is PostgreSQL's scan
-- proving every row lies below that bound. The whole migration holds ACCESS EXCLUSIVE on planflow_history (and
-- SHARE ROW EXCLUSIVE on workflow_states, for the foreign key) until it commits. Measured on the project's
-- shared, loaded 2-core machine with 1 000 000 history rows: 0.9 s for opening the store and migrating it
-- (`python -m benchmarks.history_partitions convert --rows 1000000`, a private server); an empty table:
-- milliseconds. It grows with the table (one sequential scan). Writers of task and workflow states wait that
-- long (their triggers write history), and so do reads of history; reads of states do not wait.
--
-- Later partitions are plain ranges of one day or one week (the `history_partition` setting), named
-- planflow_history_YYYYMMDD_YYYYMMDD (UTC, upper bound exclusive). They are created ahead of time by
-- `migrate` and `purge` (planflow.infra.postgres.partitions), never by a scheduler and never by a writer:
-- creating a partition locks the parent table, which a writer's trigger must not do inside the writer's
-- transaction. A write whose recorded_at has no partition yet lands in planflow_history_default, so no write
-- ever fails; the next `migrate` or `purge` moves those rows into the partition it creates for them.
-- planflow_history_add_partition(name, lo, hi) is that one step, used by both.
--
-- The triggers of 0011 insert into planflow_history by name and keep working unchanged. History ids continue
-- from the old table's (the new identity restarts after its largest id).

DO $$
DECLARE
    last_id BIGINT;
    newest  TIMESTAMPTZ;
    bound   TIMESTAMPTZ;
BEGIN
    SELECT max(history_id), max(recorded_at) INTO last_id, newest FROM planflow_history;
    bound := date_trunc('day', greatest(clock_timestamp(), coalesce(newest, clock_timestamp())) AT TIME ZONE 'UTC')
             AT TIME ZONE 'UTC' + interval '1 day';
    ALTER TABLE planflow_history ALTER COLUMN history_id DROP IDENTITY;
    EXECUTE format('ALTER TABLE planflow_history RENAME TO %I',
                   'planflow_history_before_' || to_char(bound AT TIME ZONE 'UTC', 'YYYYMMDD'));
    ALTER INDEX planflow_history_pkey RENAME TO planflow_history_before_pkey;
    ALTER INDEX planflow_history_entity RENAME TO planflow_history_before_entity;
    ALTER INDEX planflow_history_workflow RENAME TO planflow_history_before_workflow;

    CREATE TABLE planflow_history (
        history_id       BIGINT GENERATED ALWAYS AS IDENTITY,
        recorded_at      TIMESTAMPTZ NOT NULL,
        entity           TEXT NOT NULL CONSTRAINT planflow_history_entity_check CHECK (entity IN ('task', 'workflow')),
        entity_id        TEXT COLLATE "C" NOT NULL,
        workflow_exec_id TEXT COLLATE "C" NOT NULL CONSTRAINT planflow_history_workflow_exec_id_fkey
                         REFERENCES workflow_states (workflow_exec_id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
        from_status      TEXT,
        to_status        TEXT NOT NULL,
        worker           TEXT COLLATE "C",
        attempt          INTEGER,
        version          INTEGER NOT NULL,
        error            TEXT,
        PRIMARY KEY (history_id, recorded_at)
    ) PARTITION BY RANGE (recorded_at);
    CREATE INDEX planflow_history_entity ON planflow_history (entity, entity_id, history_id);
    CREATE INDEX planflow_history_workflow ON planflow_history (workflow_exec_id, history_id);
    CREATE TABLE planflow_history_default PARTITION OF planflow_history DEFAULT;
    EXECUTE format('ALTER TABLE planflow_history ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                   'planflow_history_before_' || to_char(bound AT TIME ZONE 'UTC', 'YYYYMMDD'), bound);
    PERFORM setval(pg_get_serial_sequence('planflow_history', 'history_id'), coalesce(last_id, 0) + 1, false);
END $$;

CREATE FUNCTION planflow_history_add_partition(name TEXT, lo TIMESTAMPTZ, hi TIMESTAMPTZ) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM planflow_history_default WHERE recorded_at >= lo AND recorded_at < hi) THEN
        -- Rows written while no partition covered them: moved into the new partition, then attached.
        EXECUTE format('CREATE TABLE %I (LIKE planflow_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM planflow_history_default WHERE recorded_at >= $1 '
                       'AND recorded_at < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved', name) USING lo, hi;
        EXECUTE format('ALTER TABLE planflow_history ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF planflow_history FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    END IF;
END $$;

-- Purge by partitions (planflow.infra.postgres.partitions drives these; each runs in its caller's transaction).
-- DETACH ... CONCURRENTLY is refused by PostgreSQL on a table that has a DEFAULT partition, which this table
-- keeps so that no write can fail: the detach is a plain one, a catalog change under a short lock_timeout set
-- by the caller. The detached table loses its foreign key at once, so that deleting its workflows afterwards
-- does not cascade into it row by row.
CREATE FUNCTION planflow_history_detach(name TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    fk TEXT;
BEGIN
    -- The locks the detach and the foreign key's removal need, in the order writers take them (a workflow's or
    -- task's row, then its history by trigger), so that a writer and the detach never wait for each other.
    LOCK TABLE workflow_states IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE planflow_history IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('ALTER TABLE planflow_history DETACH PARTITION %I', name);
    FOR fk IN SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(name)) AND contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', name, fk);
    END LOOP;
END $$;

-- A detached partition is dropped when no row of it belongs to a workflow that exists; otherwise its rows of
-- workflows that are gone are deleted and it is attached again with the range it had (lo NULL: MINVALUE).
-- Returns whether it was dropped.
CREATE FUNCTION planflow_history_settle(name TEXT, lo TIMESTAMPTZ, hi TIMESTAMPTZ) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    in_use BOOLEAN;
BEGIN
    -- From the workflows' side: after a purge they are the survivors, each a probe of the partition's index.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM workflow_states w WHERE EXISTS (SELECT 1 FROM %I h '
                   'WHERE h.workflow_exec_id = w.workflow_exec_id))', name) INTO in_use;
    IF NOT in_use THEN
        EXECUTE format('DROP TABLE %I', name);
        RETURN TRUE;
    END IF;
    EXECUTE format('DELETE FROM %I h WHERE NOT EXISTS (SELECT 1 FROM workflow_states w '
                   'WHERE w.workflow_exec_id = h.workflow_exec_id)', name);
    EXECUTE format('ALTER TABLE planflow_history ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%L)',
                   name, coalesce(quote_literal(lo), 'MINVALUE'), hi);
    RETURN FALSE;
END $$;
