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
        // Every change in one round trip under the lock: the pass over the affected part runs inside PostgreSQL
        // (the rules and their proofs are `Scheduler`'s: `partForPreempting`, `partForCompleting`, `addPending`),
        // instead of the worker reading the part with the lock and writing the plan in a second round trip.
        Migration(
            version: 4, name: "scheduling in one round trip",
            sql: """
                -- The shared end of every change: the pass over the part of the cluster the change affects, then
                -- its writes. The caller holds the cluster's lock and has written its own row. `m_*` are the running
                -- deployments of the part in scheduling order; `p_free_*` is the part's capacity minus what the pass
                -- admitted up to the cursor (`p_cursor_priority`, `p_cursor_seq`, seq 0 for a running cursor); `e_*`
                -- are the caller's events. Pending deployments after the cursor are read in batches that fit in what
                -- is free, only while the smallest pending request per dimension still fits (`Scheduler.addPending`).
                -- Returns a row per start (`S`) and preemption (`X`), then `C`: the new version and `available_*`.
                CREATE FUNCTION scheduler_settle(
                    p_cluster bigint, p_free_ram bigint, p_free_cpu bigint, p_free_gpu bigint, p_scan boolean,
                    p_cursor_priority integer, p_cursor_seq bigint, p_last_started bigint,
                    m_id bigint[], m_priority integer[], m_seq bigint[], m_ram bigint[], m_cpu bigint[], m_gpu bigint[],
                    e_id bigint[], e_kind deployment_event_kind[], e_cause bigint[], p_seq_step integer)
                RETURNS TABLE (r_kind "char", r_id bigint, r_priority integer, r_seq bigint, r_ram bigint, r_cpu bigint,
                               r_gpu bigint)
                LANGUAGE plpgsql AS $fn$
                DECLARE
                    v_free_ram bigint := p_free_ram; v_free_cpu bigint := p_free_cpu; v_free_gpu bigint := p_free_gpu;
                    v_cursor_priority integer := p_cursor_priority; v_cursor_seq bigint := p_cursor_seq;
                    v_last_started bigint := p_last_started;
                    v_members integer := coalesce(cardinality(m_id), 0);
                    v_next integer := 1;
                    v_more boolean := p_scan;
                    v_min_ram bigint; v_min_cpu bigint; v_min_gpu bigint;
                    b_id bigint[]; b_priority integer[]; b_seq bigint[]; b_ram bigint[]; b_cpu bigint[]; b_gpu bigint[];
                    v_batch integer := 0;
                    v_at integer := 1;
                    v_started bigint[] := '{}';
                    v_preempted bigint[] := '{}';
                    v_count bigint;
                BEGIN
                    IF v_more THEN
                        SELECT min(p.ram_required) INTO v_min_ram FROM deployments p
                        WHERE p.cluster_id = p_cluster AND p.status = 'Pending';
                        SELECT min(p.cpu_required) INTO v_min_cpu FROM deployments p
                        WHERE p.cluster_id = p_cluster AND p.status = 'Pending';
                        SELECT min(p.gpu_required) INTO v_min_gpu FROM deployments p
                        WHERE p.cluster_id = p_cluster AND p.status = 'Pending';
                    END IF;
                    LOOP
                        IF v_next <= v_members
                           AND m_priority[v_next] >= (CASE WHEN v_at <= v_batch THEN b_priority[v_at]
                                                           WHEN v_more THEN v_cursor_priority
                                                           ELSE -2147483648 END) THEN
                            -- A running member, ordered before the next pending deployment (running ones come first
                            -- within a priority): it keeps running if it still fits, or is preempted by the last
                            -- deployment started before it.
                            IF m_ram[v_next] <= v_free_ram AND m_cpu[v_next] <= v_free_cpu
                               AND m_gpu[v_next] <= v_free_gpu THEN
                                v_free_ram := v_free_ram - m_ram[v_next];
                                v_free_cpu := v_free_cpu - m_cpu[v_next];
                                v_free_gpu := v_free_gpu - m_gpu[v_next];
                            ELSE
                                v_preempted := v_preempted || m_id[v_next];
                                e_id := e_id || m_id[v_next]; e_kind := e_kind || 'Preempted'::deployment_event_kind;
                                e_cause := e_cause || v_last_started;
                                r_kind := 'X'; r_id := m_id[v_next];
                                r_priority := m_priority[v_next]; r_seq := m_seq[v_next];
                                r_ram := m_ram[v_next]; r_cpu := m_cpu[v_next]; r_gpu := m_gpu[v_next];
                                RETURN NEXT;
                            END IF;
                            v_next := v_next + 1;
                        ELSIF v_at <= v_batch THEN
                            -- A pending deployment that fit when its batch was read: it starts if it still fits.
                            IF b_ram[v_at] <= v_free_ram AND b_cpu[v_at] <= v_free_cpu
                               AND b_gpu[v_at] <= v_free_gpu THEN
                                v_free_ram := v_free_ram - b_ram[v_at];
                                v_free_cpu := v_free_cpu - b_cpu[v_at];
                                v_free_gpu := v_free_gpu - b_gpu[v_at];
                                v_started := v_started || b_id[v_at];
                                v_last_started := b_id[v_at];
                                e_id := e_id || b_id[v_at]; e_kind := e_kind || 'Started'::deployment_event_kind;
                                e_cause := e_cause || NULL::bigint;
                                r_kind := 'S'; r_id := b_id[v_at]; r_priority := b_priority[v_at]; r_seq := b_seq[v_at];
                                r_ram := b_ram[v_at]; r_cpu := b_cpu[v_at]; r_gpu := b_gpu[v_at];
                                RETURN NEXT;
                            END IF;
                            v_cursor_priority := b_priority[v_at]; v_cursor_seq := b_seq[v_at];
                            v_at := v_at + 1;
                        ELSIF v_more AND v_min_ram <= v_free_ram AND v_min_cpu <= v_free_cpu
                              AND v_min_gpu <= v_free_gpu THEN
                            -- The next batch of the queue after the cursor that fits in what the pass leaves free
                            -- there: two index range scans (its priority, then lower ones), the second only when the
                            -- first finds too few.
                            SELECT coalesce(array_agg(b.id ORDER BY b.priority DESC, b.seq), '{}'),
                                   array_agg(b.priority ORDER BY b.priority DESC, b.seq),
                                   array_agg(b.seq ORDER BY b.priority DESC, b.seq),
                                   array_agg(b.ram_required ORDER BY b.priority DESC, b.seq),
                                   array_agg(b.cpu_required ORDER BY b.priority DESC, b.seq),
                                   array_agg(b.gpu_required ORDER BY b.priority DESC, b.seq)
                            INTO b_id, b_priority, b_seq, b_ram, b_cpu, b_gpu
                            FROM (
                                WITH same AS (
                                    SELECT p.id, p.priority, p.seq, p.ram_required, p.cpu_required, p.gpu_required
                                    FROM deployments p
                                    WHERE p.cluster_id = p_cluster AND p.status = 'Pending'
                                      AND p.priority = v_cursor_priority AND p.seq > v_cursor_seq
                                      AND p.ram_required <= v_free_ram AND p.cpu_required <= v_free_cpu
                                      AND p.gpu_required <= v_free_gpu
                                    ORDER BY p.seq LIMIT 64
                                )
                                SELECT * FROM same
                                UNION ALL
                                (SELECT p.id, p.priority, p.seq, p.ram_required, p.cpu_required, p.gpu_required
                                 FROM deployments p
                                 WHERE p.cluster_id = p_cluster AND p.status = 'Pending'
                                   AND p.priority < v_cursor_priority
                                   AND p.ram_required <= v_free_ram AND p.cpu_required <= v_free_cpu
                                   AND p.gpu_required <= v_free_gpu
                                 ORDER BY p.priority DESC, p.seq LIMIT 64 - (SELECT count(*) FROM same))
                            ) AS b;
                            v_batch := cardinality(b_id);
                            v_at := 1;
                            v_more := v_batch > 0;
                        ELSIF v_more THEN
                            v_more := false;
                        ELSE
                            EXIT;
                        END IF;
                    END LOOP;

                    -- Rows are found by primary key (`status || ''` keeps a generic plan from scanning a status
                    -- index instead).
                    IF cardinality(v_started) > 0 THEN
                        UPDATE deployments SET status = 'Running', started_at = now()
                        WHERE id = ANY(v_started) AND status || '' = 'Pending';
                        GET DIAGNOSTICS v_count = ROW_COUNT;
                        IF v_count <> cardinality(v_started) THEN
                            RAISE EXCEPTION 'cluster %: the starts do not match the plan', p_cluster;
                        END IF;
                    END IF;
                    IF cardinality(v_preempted) > 0 THEN
                        UPDATE deployments SET status = 'Pending', preemptions = preemptions + 1
                        WHERE id = ANY(v_preempted) AND status || '' = 'Running';
                        GET DIAGNOSTICS v_count = ROW_COUNT;
                        IF v_count <> cardinality(v_preempted) THEN
                            RAISE EXCEPTION 'cluster %: the preemptions do not match the plan', p_cluster;
                        END IF;
                    END IF;
                    INSERT INTO deployment_events (deployment_id, cluster_id, kind, caused_by)
                    SELECT e.deployment, p_cluster, e.kind, e.cause
                    FROM unnest(e_id, e_kind, e_cause) AS e(deployment, kind, cause);
                    r_kind := 'C'; r_priority := NULL; r_seq := NULL;
                    r_ram := v_free_ram; r_cpu := v_free_cpu; r_gpu := v_free_gpu;
                    UPDATE clusters
                    SET available_ram = v_free_ram, available_cpu = v_free_cpu, available_gpu = v_free_gpu,
                        next_seq = next_seq + p_seq_step, version = version + 1
                    WHERE id = p_cluster RETURNING version INTO r_id;
                    RETURN NEXT;
                END
                $fn$;

                -- Creates a deployment in a cluster and schedules it (`Scheduler.plan(adding:to:)`). Returns `E` with
                -- 401 (caller unknown or token revoked), 404 (cluster not in scope) or 422 (larger than the cluster),
                -- or `R`/`P` (the new deployment, Running or Pending) and `scheduler_settle`'s rows.
                CREATE FUNCTION scheduler_create(
                    p_caller bigint, p_issued_at bigint, p_cluster bigint, p_name text, p_image text,
                    p_ram bigint, p_cpu bigint, p_gpu bigint, p_priority integer)
                RETURNS TABLE (r_kind "char", r_id bigint, r_priority integer, r_seq bigint, r_ram bigint, r_cpu bigint,
                               r_gpu bigint)
                LANGUAGE plpgsql AS $fn$
                DECLARE
                    c record;
                    v_id bigint;
                    v_status deployment_status := 'Pending';
                    v_lack_ram bigint; v_lack_cpu bigint; v_lack_gpu bigint;
                    v_below record;
                    v_covered_ram bigint := 0; v_covered_cpu bigint := 0; v_covered_gpu bigint := 0;
                    m_id bigint[] := '{}'; m_priority integer[] := '{}'; m_seq bigint[] := '{}';
                    m_ram bigint[] := '{}'; m_cpu bigint[] := '{}'; m_gpu bigint[] := '{}';
                    d record;
                BEGIN
                    SELECT cl.id, cl.organization_id, cl.next_seq, cl.total_ram, cl.total_cpu, cl.total_gpu,
                           cl.available_ram, cl.available_cpu, cl.available_gpu
                    INTO c
                    FROM users u LEFT JOIN clusters cl ON cl.id = p_cluster
                        AND (cl.organization_id = u.organization_id
                             OR (u.organization_id IS NULL AND cl.organization_id IS NULL AND cl.owner_id = u.id))
                    WHERE u.id = p_caller AND u.tokens_valid_after <= p_issued_at;
                    r_kind := 'E';
                    IF NOT FOUND THEN
                        r_id := 401; RETURN NEXT; RETURN;
                    ELSIF c.id IS NULL THEN
                        r_id := 404; RETURN NEXT; RETURN;
                    ELSIF p_ram > c.total_ram OR p_cpu > c.total_cpu OR p_gpu > c.total_gpu THEN
                        r_id := 422; RETURN NEXT; RETURN;
                    END IF;
                    v_id := nextval('deployments_id_seq');
                    v_lack_ram := greatest(0, p_ram - c.available_ram);
                    v_lack_cpu := greatest(0, p_cpu - c.available_cpu);
                    v_lack_gpu := greatest(0, p_gpu - c.available_gpu);
                    IF v_lack_ram = 0 AND v_lack_cpu = 0 AND v_lack_gpu = 0 THEN
                        v_status := 'Running';
                    ELSE
                        -- Evicting every lower priority must make room, or it waits and nothing else changes.
                        SELECT coalesce(sum(r.ram_required), 0) AS ram, coalesce(sum(r.cpu_required), 0) AS cpu,
                               coalesce(sum(r.gpu_required), 0) AS gpu
                        INTO v_below
                        FROM deployments r
                        WHERE r.cluster_id = p_cluster AND r.status = 'Running' AND r.priority < p_priority;
                        IF v_lack_ram <= v_below.ram AND v_lack_cpu <= v_below.cpu AND v_lack_gpu <= v_below.gpu THEN
                            v_status := 'Running';
                            -- The shortest tail of those that covers what it lacks, read from the lowest-ordered end
                            -- and kept in scheduling order: everything ordered before the tail keeps its place
                            -- (`Scheduler.partForPreempting`).
                            FOR d IN
                                SELECT r.id, r.priority, r.seq, r.ram_required, r.cpu_required, r.gpu_required
                                FROM deployments r
                                WHERE r.cluster_id = p_cluster AND r.status = 'Running' AND r.priority < p_priority
                                ORDER BY r.priority, r.seq DESC
                            LOOP
                                m_id := d.id || m_id; m_priority := d.priority || m_priority; m_seq := d.seq || m_seq;
                                m_ram := d.ram_required::bigint || m_ram; m_cpu := d.cpu_required::bigint || m_cpu;
                                m_gpu := d.gpu_required::bigint || m_gpu;
                                v_covered_ram := v_covered_ram + d.ram_required;
                                v_covered_cpu := v_covered_cpu + d.cpu_required;
                                v_covered_gpu := v_covered_gpu + d.gpu_required;
                                EXIT WHEN v_lack_ram <= v_covered_ram AND v_lack_cpu <= v_covered_cpu
                                    AND v_lack_gpu <= v_covered_gpu;
                            END LOOP;
                        END IF;
                    END IF;
                    INSERT INTO deployments (id, cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                             cpu_required, gpu_required, priority, status, seq, started_at)
                    VALUES (v_id, p_cluster, c.organization_id, p_caller, p_name, p_image, p_ram, p_cpu, p_gpu,
                            p_priority, v_status, c.next_seq, CASE WHEN v_status = 'Running' THEN now() END);
                    r_kind := CASE WHEN v_status = 'Running' THEN 'R' ELSE 'P' END;
                    r_id := v_id; r_priority := p_priority;
                    r_seq := c.next_seq; r_ram := p_ram; r_cpu := p_cpu; r_gpu := p_gpu;
                    RETURN NEXT;
                    IF v_status = 'Running' THEN
                        RETURN QUERY SELECT * FROM scheduler_settle(
                            p_cluster, c.available_ram + v_covered_ram - p_ram, c.available_cpu + v_covered_cpu - p_cpu,
                            c.available_gpu + v_covered_gpu - p_gpu, cardinality(m_id) > 0, m_priority[1], 0, v_id,
                            m_id, m_priority, m_seq, m_ram, m_cpu, m_gpu,
                            ARRAY[v_id, v_id], ARRAY['Queued', 'Started']::deployment_event_kind[],
                            ARRAY[NULL, NULL]::bigint[], 1);
                    ELSE
                        RETURN QUERY SELECT * FROM scheduler_settle(
                            p_cluster, c.available_ram, c.available_cpu, c.available_gpu, false, NULL, NULL, NULL,
                            NULL, NULL, NULL, NULL, NULL, NULL,
                            ARRAY[v_id], ARRAY['Queued']::deployment_event_kind[], ARRAY[NULL]::bigint[], 1);
                    END IF;
                END
                $fn$;

                -- Completes a running deployment and schedules what its resources admit. Returns `E` with 401, 404
                -- or 409 (not Running), or `D` (the completed deployment) and `scheduler_settle`'s rows.
                CREATE FUNCTION scheduler_complete(p_caller bigint, p_issued_at bigint, p_id bigint)
                RETURNS TABLE (r_kind "char", r_id bigint, r_priority integer, r_seq bigint, r_ram bigint, r_cpu bigint,
                               r_gpu bigint)
                LANGUAGE plpgsql AS $fn$
                DECLARE
                    d record;
                    v_head integer;
                    m record;
                BEGIN
                    SELECT dp.id, dp.cluster_id, dp.status, dp.priority, dp.seq, dp.ram_required::bigint AS ram,
                           dp.cpu_required::bigint AS cpu, dp.gpu_required::bigint AS gpu,
                           cl.available_ram, cl.available_cpu, cl.available_gpu
                    INTO d
                    FROM users u LEFT JOIN deployments dp ON dp.id = p_id
                        AND (dp.organization_id = u.organization_id
                             OR (u.organization_id IS NULL AND dp.organization_id IS NULL AND dp.owner_id = u.id))
                    LEFT JOIN clusters cl ON cl.id = dp.cluster_id
                    WHERE u.id = p_caller AND u.tokens_valid_after <= p_issued_at;
                    r_kind := 'E';
                    IF NOT FOUND THEN
                        r_id := 401; RETURN NEXT; RETURN;
                    ELSIF d.id IS NULL THEN
                        r_id := 404; RETURN NEXT; RETURN;
                    ELSIF d.status <> 'Running' THEN
                        r_id := 409; RETURN NEXT; RETURN;
                    END IF;
                    UPDATE deployments SET status = 'Completed', finished_at = now() WHERE id = p_id;
                    r_kind := 'D'; r_id := d.id; r_priority := d.priority; r_seq := d.seq;
                    r_ram := d.ram; r_cpu := d.cpu; r_gpu := d.gpu;
                    RETURN NEXT;
                    -- Up to the head of the queue after it, the pass meets only running deployments, each with more
                    -- room than before; only the running ones below the head's priority can lose their place
                    -- (`Scheduler.partForCompleting`).
                    SELECT p.priority INTO v_head FROM deployments p
                    WHERE p.cluster_id = d.cluster_id AND p.status = 'Pending' AND p.priority <= d.priority
                    ORDER BY p.priority DESC, p.seq LIMIT 1;
                    IF NOT FOUND THEN
                        RETURN QUERY SELECT * FROM scheduler_settle(
                            d.cluster_id, d.available_ram + d.ram, d.available_cpu + d.cpu, d.available_gpu + d.gpu,
                            false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                            ARRAY[p_id], ARRAY['Completed']::deployment_event_kind[], ARRAY[NULL]::bigint[], 0);
                        RETURN;
                    END IF;
                    SELECT coalesce(array_agg(r.id ORDER BY r.priority DESC, r.seq), '{}') AS id,
                           array_agg(r.priority ORDER BY r.priority DESC, r.seq) AS priority,
                           array_agg(r.seq ORDER BY r.priority DESC, r.seq) AS seq,
                           array_agg(r.ram_required::bigint ORDER BY r.priority DESC, r.seq) AS ram,
                           array_agg(r.cpu_required::bigint ORDER BY r.priority DESC, r.seq) AS cpu,
                           array_agg(r.gpu_required::bigint ORDER BY r.priority DESC, r.seq) AS gpu,
                           coalesce(sum(r.ram_required), 0)::bigint AS sum_ram,
                           coalesce(sum(r.cpu_required), 0)::bigint AS sum_cpu,
                           coalesce(sum(r.gpu_required), 0)::bigint AS sum_gpu
                    INTO m
                    FROM deployments r
                    WHERE r.cluster_id = d.cluster_id AND r.status = 'Running' AND r.priority < v_head;
                    RETURN QUERY SELECT * FROM scheduler_settle(
                        d.cluster_id, d.available_ram + d.ram + m.sum_ram, d.available_cpu + d.cpu + m.sum_cpu,
                        d.available_gpu + d.gpu + m.sum_gpu, true, d.priority, 0, NULL,
                        m.id, m.priority, m.seq, m.ram, m.cpu, m.gpu,
                        ARRAY[p_id], ARRAY['Completed']::deployment_event_kind[], ARRAY[NULL]::bigint[], 0);
                END
                $fn$;
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

    /// Applies every migration the database lacks up to `target`, under an advisory lock so that masters starting
    /// together take turns; the second finds nothing left to do. Returns the versions it applied.
    ///
    /// - Throws: `PostgresError` when a migration fails (that migration is rolled back).
    static func migrate(_ connection: PostgresConnection, upTo target: Int = latestVersion) throws(PostgresError)
        -> [Int]
    {
        // "relation already exists, skipping" notices are expected on every start after the first.
        try connection.unsafeExecute(script: "SET client_min_messages TO warning")
        try connection.execute(lock, [String(lockKey)])
        defer { _ = try? connection.execute(unlock, [String(lockKey)]) }
        try connection.unsafeExecute(script: createTable)
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
