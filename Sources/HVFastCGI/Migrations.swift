/// The database schema as numbered migrations, applied in order, each in its own transaction.
///
/// Append new migrations; never edit one that has shipped.
enum Migrations {
    struct Migration {
        let version: Int
        let name: String
        let sql: String
    }

    /// Serializes migration across masters on every host: `pg_advisory_lock` on this key.
    static let lockKey: Int64 = 0x4856_4D49_4752  // "HVMIGR"

    static let all: [Migration] = [
        Migration(
            version: 1, name: "identity and tenancy",
            sql: """
                CREATE TABLE organizations (
                    id bigserial PRIMARY KEY,
                    name text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 128),
                    invite_code text NOT NULL UNIQUE CHECK (char_length(invite_code) >= 22),
                    created_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE users (
                    id bigserial PRIMARY KEY,
                    username text NOT NULL UNIQUE CHECK (char_length(username) BETWEEN 3 AND 64),
                    password_hash text NOT NULL,
                    organization_id bigint REFERENCES organizations(id),
                    role text CHECK (role IN ('admin', 'member')),
                    tokens_valid_after bigint NOT NULL DEFAULT 0,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    CHECK ((organization_id IS NULL) = (role IS NULL))
                );
                CREATE INDEX users_organization ON users (organization_id) WHERE organization_id IS NOT NULL;
                CREATE TABLE clusters (
                    id bigserial PRIMARY KEY,
                    organization_id bigint REFERENCES organizations(id),
                    owner_id bigint NOT NULL REFERENCES users(id),
                    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
                    total_ram bigint NOT NULL CHECK (total_ram >= 0),
                    total_cpu bigint NOT NULL CHECK (total_cpu >= 0),
                    total_gpu bigint NOT NULL CHECK (total_gpu >= 0),
                    available_ram bigint NOT NULL,
                    available_cpu bigint NOT NULL,
                    available_gpu bigint NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    CHECK (available_ram BETWEEN 0 AND total_ram),
                    CHECK (available_cpu BETWEEN 0 AND total_cpu),
                    CHECK (available_gpu BETWEEN 0 AND total_gpu)
                );
                CREATE UNIQUE INDEX clusters_organization_name ON clusters (organization_id, name)
                    WHERE organization_id IS NOT NULL;
                CREATE UNIQUE INDEX clusters_personal_name ON clusters (owner_id, name) WHERE organization_id IS NULL;
                COMMENT ON COLUMN clusters.total_cpu IS 'millicores';
                COMMENT ON COLUMN clusters.available_cpu IS 'millicores';
                """),
        Migration(
            version: 2, name: "deployments and scheduling",
            sql: """
                ALTER TABLE clusters
                    ADD COLUMN version bigint NOT NULL DEFAULT 0,
                    ADD COLUMN next_seq bigint NOT NULL DEFAULT 1;
                CREATE TABLE deployments (
                    id bigserial PRIMARY KEY,
                    cluster_id bigint NOT NULL REFERENCES clusters(id),
                    -- The cluster's tenant, copied for name uniqueness and scoped reads (the cluster's key holds it).
                    organization_id bigint,
                    owner_id bigint NOT NULL REFERENCES users(id),
                    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
                    image_path text NOT NULL CHECK (char_length(image_path) BETWEEN 1 AND 512),
                    ram_required bigint NOT NULL CHECK (ram_required >= 0),
                    cpu_required bigint NOT NULL CHECK (cpu_required >= 0),
                    gpu_required bigint NOT NULL CHECK (gpu_required >= 0),
                    priority integer NOT NULL,
                    status text NOT NULL CHECK (status IN ('Pending', 'Running', 'Completed', 'Cancelled')),
                    seq bigint NOT NULL,
                    preemptions integer NOT NULL DEFAULT 0 CHECK (preemptions >= 0),
                    created_at timestamptz NOT NULL DEFAULT now(),
                    started_at timestamptz,
                    finished_at timestamptz,
                    UNIQUE (cluster_id, seq),
                    CHECK ((status IN ('Completed', 'Cancelled')) = (finished_at IS NOT NULL))
                );
                COMMENT ON COLUMN deployments.cpu_required IS 'millicores';
                CREATE UNIQUE INDEX deployments_organization_name ON deployments (organization_id, name)
                    WHERE organization_id IS NOT NULL;
                CREATE UNIQUE INDEX deployments_personal_name ON deployments (owner_id, name)
                    WHERE organization_id IS NULL;
                -- The queue in scheduling order, read only as far as free capacity can admit someone.
                CREATE INDEX deployments_pending_order ON deployments (cluster_id, priority DESC, seq)
                    WHERE status = 'Pending';
                -- The smallest waiting request per dimension: when free capacity is below it, nobody can start.
                CREATE INDEX deployments_pending_ram ON deployments (cluster_id, ram_required) WHERE status = 'Pending';
                CREATE INDEX deployments_pending_cpu ON deployments (cluster_id, cpu_required) WHERE status = 'Pending';
                CREATE INDEX deployments_pending_gpu ON deployments (cluster_id, gpu_required) WHERE status = 'Pending';
                CREATE INDEX deployments_running ON deployments (cluster_id, priority DESC, seq)
                    INCLUDE (ram_required, cpu_required, gpu_required) WHERE status = 'Running';
                CREATE TABLE deployment_events (
                    id bigserial PRIMARY KEY,
                    deployment_id bigint NOT NULL REFERENCES deployments(id),
                    -- The deployment's cluster (its key holds it), kept for per-cluster history without a join.
                    cluster_id bigint NOT NULL,
                    kind text NOT NULL CHECK (kind IN ('Queued', 'Started', 'Preempted', 'Completed', 'Cancelled')),
                    caused_by bigint REFERENCES deployments(id),
                    at timestamptz NOT NULL DEFAULT now(),
                    CHECK (kind = 'Preempted' OR caused_by IS NULL)
                );
                CREATE INDEX deployment_events_deployment ON deployment_events (deployment_id, id);
                """),
        // PostgreSQL prepares every CHECK constraint of a table (parsing it from its stored text) on each statement
        // that writes a row: v2's 18 CHECKs cost a create about 100 µs of the ≈ 0.3 ms it holds its cluster's lock.
        // Fixed sets become enums and single-column limits become domains (checked only where a value is assigned,
        // from the type cache); the one cross-column rule left is the cluster's accounting. The event table's
        // foreign keys go too: only the scheduler writes events, in the statement that writes their deployments,
        // and deployments are never deleted.
        Migration(
            version: 3, name: "cheaper constraints",
            sql: """
                CREATE TYPE deployment_status AS ENUM ('Pending', 'Running', 'Completed', 'Cancelled');
                CREATE TYPE deployment_event_kind AS ENUM ('Queued', 'Started', 'Preempted', 'Completed', 'Cancelled');
                CREATE DOMAIN resource_amount AS bigint CHECK (VALUE >= 0);
                CREATE DOMAIN display_name AS text CHECK (char_length(VALUE) BETWEEN 1 AND 128);
                CREATE DOMAIN image_reference AS text CHECK (char_length(VALUE) BETWEEN 1 AND 512);
                ALTER TABLE clusters
                    DROP CONSTRAINT clusters_name_check, DROP CONSTRAINT clusters_total_ram_check,
                    DROP CONSTRAINT clusters_total_cpu_check, DROP CONSTRAINT clusters_total_gpu_check,
                    DROP CONSTRAINT clusters_check, DROP CONSTRAINT clusters_check1, DROP CONSTRAINT clusters_check2,
                    ALTER COLUMN name TYPE display_name,
                    ALTER COLUMN total_ram TYPE resource_amount, ALTER COLUMN total_cpu TYPE resource_amount,
                    ALTER COLUMN total_gpu TYPE resource_amount,
                    ADD CONSTRAINT clusters_accounting CHECK (available_ram BETWEEN 0 AND total_ram
                        AND available_cpu BETWEEN 0 AND total_cpu AND available_gpu BETWEEN 0 AND total_gpu);
                -- Partial indexes on status are rebuilt for the new type.
                DROP INDEX deployments_pending_order, deployments_pending_ram, deployments_pending_cpu,
                    deployments_pending_gpu, deployments_running;
                ALTER TABLE deployments
                    DROP CONSTRAINT deployments_name_check, DROP CONSTRAINT deployments_image_path_check,
                    DROP CONSTRAINT deployments_ram_required_check, DROP CONSTRAINT deployments_cpu_required_check,
                    DROP CONSTRAINT deployments_gpu_required_check, DROP CONSTRAINT deployments_status_check,
                    DROP CONSTRAINT deployments_preemptions_check, DROP CONSTRAINT deployments_check,
                    ALTER COLUMN name TYPE display_name, ALTER COLUMN image_path TYPE image_reference,
                    ALTER COLUMN ram_required TYPE resource_amount, ALTER COLUMN cpu_required TYPE resource_amount,
                    ALTER COLUMN gpu_required TYPE resource_amount,
                    ALTER COLUMN status TYPE deployment_status USING status::deployment_status;
                CREATE INDEX deployments_pending_order ON deployments (cluster_id, priority DESC, seq)
                    WHERE status = 'Pending';
                CREATE INDEX deployments_pending_ram ON deployments (cluster_id, ram_required) WHERE status = 'Pending';
                CREATE INDEX deployments_pending_cpu ON deployments (cluster_id, cpu_required) WHERE status = 'Pending';
                CREATE INDEX deployments_pending_gpu ON deployments (cluster_id, gpu_required) WHERE status = 'Pending';
                CREATE INDEX deployments_running ON deployments (cluster_id, priority DESC, seq)
                    INCLUDE (ram_required, cpu_required, gpu_required) WHERE status = 'Running';
                ALTER TABLE deployment_events
                    DROP CONSTRAINT deployment_events_check, DROP CONSTRAINT deployment_events_kind_check,
                    DROP CONSTRAINT deployment_events_deployment_id_fkey,
                    DROP CONSTRAINT deployment_events_caused_by_fkey,
                    ALTER COLUMN kind TYPE deployment_event_kind USING kind::deployment_event_kind;
                """),
        // Scope as one key per row (`sqlInScope`), so that names are unique per key and a tenant's list walks its own
        // rows in id order: before, a list filtered the whole table's id order, so a tenant with a few rows paid for
        // every other tenant's.
        Migration(
            version: 4, name: "tenant keys",
            sql: """
                DROP INDEX clusters_organization_name, clusters_personal_name,
                    deployments_organization_name, deployments_personal_name;
                CREATE UNIQUE INDEX clusters_tenant_name ON clusters ((coalesce(organization_id, -owner_id)), name);
                CREATE INDEX clusters_tenant_id ON clusters ((coalesce(organization_id, -owner_id)), id);
                CREATE UNIQUE INDEX deployments_tenant_name
                    ON deployments ((coalesce(organization_id, -owner_id)), name);
                CREATE INDEX deployments_tenant_id ON deployments ((coalesce(organization_id, -owner_id)), id);
                """),
        // A tenant's deployments by status in id order, beside their id order alone: a list filtered by status walks
        // that status's rows. Before, the filter was applied along the tenant's whole id order, so
        // `?status=Running` beside 100,000 pending deployments read them all.
        Migration(
            version: 5, name: "tenant status keys",
            sql: """
                CREATE INDEX deployments_tenant_status
                    ON deployments ((coalesce(organization_id, -owner_id)), status, id);
                """),
        // Indexes that leave each statement one to walk whatever the statistics say (`GenericPlanTests`): names unique
        // per tenant by an index that begins with the name, so that a tenant's list walks only its (tenant, id) index
        // (planned without statistics, a page read the tenant's rows along the name index and sorted them by id); and
        // the smallest pending requests by indexes whose predicate only their own look-ups state, so that a walk of the
        // queue cannot take one of them and sort (planned while few deployments were pending and the indexes still
        // held the entries of earlier queues, every walk did, under the cluster's lock). Building them blocks
        // reads and writes of the two tables for the time it takes (a one-off, when upgrading a large database).
        Migration(
            version: 6, name: "keys for generic plans",
            sql: """
                DROP INDEX clusters_tenant_name, deployments_tenant_name,
                    deployments_pending_ram, deployments_pending_cpu, deployments_pending_gpu;
                CREATE UNIQUE INDEX clusters_name_tenant ON clusters (name, (coalesce(organization_id, -owner_id)));
                CREATE UNIQUE INDEX deployments_name_tenant
                    ON deployments (name, (coalesce(organization_id, -owner_id)));
                CREATE INDEX deployments_pending_ram ON deployments (cluster_id, ram_required)
                    WHERE status = 'Pending' AND ram_required >= 0;
                CREATE INDEX deployments_pending_cpu ON deployments (cluster_id, cpu_required)
                    WHERE status = 'Pending' AND cpu_required >= 0;
                CREATE INDEX deployments_pending_gpu ON deployments (cluster_id, gpu_required)
                    WHERE status = 'Pending' AND gpu_required >= 0;
                """),
        // Where each cluster's look-ups of its running set's tail and of its queue's head start: every running
        // deployment is at or after `running_from` along the tail (lower priority first, then later `seq`), every
        // pending one at or after `pending_from` in scheduling order. Index entries of deployments that left those
        // sets stay until a vacuum, right where the look-ups start; starting past them skips them. The defaults take
        // in every deployment; each change moves them (`SchedulerStatements.lookUpSQL`).
        Migration(
            version: 7, name: "scan starts",
            sql: """
                ALTER TABLE clusters
                    ADD COLUMN running_from_priority integer NOT NULL DEFAULT -2147483648,
                    ADD COLUMN running_from_seq bigint NOT NULL DEFAULT 9223372036854775807,
                    ADD COLUMN pending_from_priority integer NOT NULL DEFAULT 2147483647,
                    ADD COLUMN pending_from_seq bigint NOT NULL DEFAULT 0;
                """),
        // Autovacuum leaves `clusters` alone until it holds 10,000 dead rows (its default: 50 and a fifth of the
        // table), and never analyzes it. Every scheduler change rewrites its cluster's row, but no indexed column of
        // it, so its updates are heap-only and their old versions are pruned on their page (`ClusterVacuumTests`): the
        // table needs no vacuum for them. Under load, the default vacuumed and analyzed it every minute, and each
        // pass invalidates every backend's plans of the statements that read it, which the backends then make again
        // under a cluster's lock (`docs/decisions.md`, "Autovacuum and `clusters`"). Anti-wraparound vacuums still run.
        Migration(
            version: 8, name: "clusters out of autovacuum rounds",
            sql: """
                ALTER TABLE clusters SET (autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_scale_factor = 0,
                    autovacuum_analyze_threshold = 2000000000, autovacuum_analyze_scale_factor = 0);
                """),
        // Each event is entered in one index instead of two: its key is `(deployment_id, id)`, the order a
        // deployment's history is read in, so the key on `id` alone and the index beside it go. A preempting create
        // writes three events under its cluster's lock (`docs/decisions.md`, "Fewer index entries and fewer replans").
        Migration(
            version: 9, name: "events keyed by deployment",
            sql: """
                ALTER TABLE deployment_events DROP CONSTRAINT deployment_events_pkey,
                    ADD CONSTRAINT deployment_events_pkey PRIMARY KEY (deployment_id, id);
                DROP INDEX deployment_events_deployment;
                """),
        // Autovacuum no longer analyzes `deployments` and `deployment_events`, like `clusters` (migration 8). The
        // service plans each of its statements once per connection, generically, and every plan reads the same
        // indexes with statistics and without them (`GenericPlanTests`), so an `ANALYZE` changes no plan of the
        // service's. But each one updates the table's `pg_class` row, which invalidates every backend's plans that
        // read it, and each backend then makes them again under a cluster's lock. Vacuums still run. An operator's
        // own queries may want statistics: `ANALYZE deployments` by hand gives them.
        Migration(
            version: 10, name: "scheduler tables out of autoanalyze",
            sql: """
                ALTER TABLE deployments
                    SET (autovacuum_analyze_threshold = 2000000000, autovacuum_analyze_scale_factor = 0);
                ALTER TABLE deployment_events
                    SET (autovacuum_analyze_threshold = 2000000000, autovacuum_analyze_scale_factor = 0);
                """),
    ]

    static var latestVersion: Int { all.last?.version ?? 0 }

    private static let createTable = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    static let currentVersion = Statement(
        name: "migrations_current", sql: "SELECT coalesce(max(version), 0) FROM schema_migrations")
    private static let lock = Statement(name: "migrations_lock", sql: "SELECT pg_advisory_lock($1)")
    private static let unlock = Statement(name: "migrations_unlock", sql: "SELECT pg_advisory_unlock($1)")
    private static let record = Statement(
        name: "migrations_record", sql: "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
    private static let recorded = Statement(
        name: "migrations_recorded", sql: "SELECT version, name FROM schema_migrations")

    /// Applies every migration the database lacks up to `target`, under an advisory lock so that masters starting
    /// together take turns; the second finds nothing left to do. Returns the versions it applied.
    ///
    /// - Throws: `PostgresError` when a migration fails (that migration is rolled back), or when a recorded migration
    ///   has another name than this build's of that number.
    static func migrate(_ connection: PostgresConnection, upTo target: Int = latestVersion) throws(PostgresError)
        -> [Int]
    {
        // "relation already exists, skipping" notices are expected on every start after the first.
        try connection.unsafeExecute(script: "SET client_min_messages TO warning")
        try connection.execute(lock, [String(lockKey)])
        defer { _ = try? connection.execute(unlock, [String(lockKey)]) }
        try connection.unsafeExecute(script: createTable)
        // A version recorded under another name was applied by a build whose migration of that number differs (one
        // was reverted and its number reused, or the database belongs to another branch): refuse rather than build on
        // a schema this build does not know.
        let done = try connection.execute(recorded)
        for row in 0..<done.rowCount {
            guard let version = done.int(row, 0), let name = done.string(row, 1),
                let known = all.first(where: { $0.version == version }), known.name != name
            else { continue }
            throw PostgresError(
                sqlState: nil,
                message: "the database has migration \(version) \"\(name)\", but this build's migration \(version)"
                    + " is \"\(known.name)\": it was migrated by another build", connectionLost: false)
        }
        let current = Int(try connection.execute(currentVersion).int(0, 0) ?? 0)
        var applied: [Int] = []
        for migration in all where migration.version > current && migration.version <= target {
            try connection.unsafeExecute(script: "BEGIN")
            do {
                try connection.unsafeExecute(script: migration.sql)
                try connection.execute(record, [String(migration.version), migration.name])
                try connection.unsafeExecute(script: "COMMIT")
            } catch {
                _ = try? connection.unsafeExecute(script: "ROLLBACK")
                throw error
            }
            applied.append(migration.version)
        }
        return applied
    }
}
