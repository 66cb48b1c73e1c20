/// The PostgreSQL tables, one per collection of contract sections 4 and 8, with the documents'
/// field names as columns (nested documents and arrays as jsonb, times as timestamptz, local
/// dates as "YYYY-MM-DD" text). Each store's file adds the DDL of the tables it owns as a
/// fragment; `PostgresSchema` assembles the migrations from them.
public enum PostgresTables {
    /// Accepted telemetry, immutable but for `processed`. Partitioned by month of `received_at`
    /// so retention (730 days) drops whole partitions. Since migration 3 no index holds
    /// `processed` and partitions leave room on each page (`eventFillFactor`), so setting it is
    /// a heap-only (HOT) update; which events wait for the ledger is `telemetry_unprocessed`. `id` is the MongoDB document's `_id`
    /// (`esp32_name@device_ts` for a trusted device clock, `h:<event_hash>` otherwise). A unique
    /// index on a partitioned table must contain the partition key, so `event_hash` and `id`
    /// cannot be unique across months by an index: the drain checks them under an advisory lock
    /// per device (see the ingest storage).
    static let telemetryEvents = """
    CREATE TABLE telemetry_events (
        id text NOT NULL,
        event_hash text NOT NULL,
        esp32_name text NOT NULL,
        classroom text NOT NULL,
        device_ts timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        energy_wh_total double precision NOT NULL,
        switch_state jsonb NOT NULL,
        clock text NOT NULL,
        timestamp_sent text,
        processed boolean NOT NULL DEFAULT false,
        clock_note text,
        power_w double precision,
        boot_id text,
        seq bigint,
        uptime_s double precision,
        fw_version text,
        extra jsonb NOT NULL DEFAULT '{}'::jsonb,
        PRIMARY KEY (id, received_at)
    ) PARTITION BY RANGE (received_at);
    CREATE INDEX telemetry_events_event_hash ON telemetry_events (event_hash);
    CREATE INDEX telemetry_events_esp32_name_device_ts ON telemetry_events (esp32_name, device_ts);
    CREATE INDEX telemetry_events_unprocessed ON telemetry_events (received_at) WHERE NOT processed;
    CREATE INDEX telemetry_events_device_ts ON telemetry_events (device_ts);
    CREATE INDEX telemetry_events_received_at ON telemetry_events (received_at);
    """

    /// Migration 3: the events not yet in the ledger, one row each, written in the drain's
    /// transaction and deleted in the statement that sets `processed`, so a row is here exactly
    /// while its event's `processed` is false. Setting `processed` was the server's largest cost
    /// (54 % of statement time in bench-e2e): the partial index on `NOT processed` made every
    /// update a new tuple with six new index entries. The queue holds only what waits (seconds
    /// of traffic, or an outage's backlog), so finding work reads a small table. The events are
    /// locked against writes first (SHARE: readers go on), so no drain commits an event between
    /// the copy of the unprocessed ones and the end of the migration.
    static let unprocessedQueue = """
    LOCK TABLE telemetry_events IN SHARE MODE;
    CREATE TABLE telemetry_unprocessed (
        id text PRIMARY KEY,
        esp32_name text NOT NULL,
        device_ts timestamptz NOT NULL,
        received_at timestamptz NOT NULL
    );
    CREATE INDEX telemetry_unprocessed_received_at ON telemetry_unprocessed (received_at);
    CREATE INDEX telemetry_unprocessed_esp32_name_device_ts ON telemetry_unprocessed (esp32_name, device_ts);
    INSERT INTO telemetry_unprocessed (id, esp32_name, device_ts, received_at)
        SELECT id, esp32_name, device_ts, received_at FROM telemetry_events WHERE NOT processed;
    DROP INDEX telemetry_events_unprocessed;
    DO $$ DECLARE p regclass; BEGIN
        FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'telemetry_events'::regclass LOOP
            EXECUTE format('ALTER TABLE %s SET (fillfactor = \(eventFillFactor))', p);
        END LOOP;
    END $$;
    """

    /// The fill factor of `telemetry_events` partitions: the room a page keeps for the new
    /// version of each of its rows when `processed` is set, so the update stays on the page.
    static let eventFillFactor = 50

    /// The ledger: append-only; an entry replaced by late data keeps its row with
    /// `superseded_by` set. `id` is the content-addressed entry id (`LedgerEntry.id`).
    static let ledgers = """
    CREATE TABLE device_consumption_ledgers (
        id text PRIMARY KEY,
        esp32_name text NOT NULL,
        classroom text NOT NULL,
        start_ts timestamptz NOT NULL,
        end_ts timestamptz NOT NULL,
        date text NOT NULL,
        delta_wh double precision NOT NULL CHECK (delta_wh >= 0),
        is_reset_marker boolean NOT NULL,
        billable boolean NOT NULL,
        quality jsonb NOT NULL,
        source_events jsonb NOT NULL,
        part integer NOT NULL DEFAULT 1,
        parts integer NOT NULL DEFAULT 1,
        derivation_version integer NOT NULL,
        created_at timestamptz NOT NULL,
        superseded_by text,
        superseded_at timestamptz
    );
    CREATE INDEX device_consumption_ledgers_esp32_name_start_ts ON device_consumption_ledgers (esp32_name, start_ts);
    CREATE INDEX device_consumption_ledgers_esp32_name_end_ts ON device_consumption_ledgers (esp32_name, end_ts);
    CREATE INDEX device_consumption_ledgers_esp32_name_date ON device_consumption_ledgers (esp32_name, date);
    CREATE INDEX device_consumption_ledgers_date_classroom ON device_consumption_ledgers (date, classroom);
    """
}
