import Domain
import Foundation
import Testing

@testable import HVFastCGI

/// Masters starting together on one fresh database: the advisory lock makes them take turns, every migration is
/// applied exactly once, and each master succeeds.
@Suite(.serialized) struct MigrationTests {
    @Test func concurrentMigrationsOnAFreshDatabaseAllSucceedAndApplyEachVersionOnce() throws {
        let (stack, url) = try freshDatabase("fresh")
        defer { stack.stop() }

        let results = ResultsBox()
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let connection = try PostgresConnection(url: url)
                    results.append(.success(try Migrations.migrate(connection)))
                } catch {
                    results.append(.failure(error))
                }
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success)

        let outcomes = results.values
        #expect(outcomes.count == 4)
        let applied = outcomes.compactMap { try? $0.get() }
        #expect(applied.count == 4, "every master's migration step succeeds")
        #expect(applied.flatMap { $0 }.sorted() == Migrations.all.map(\.version), "each version applied once")
        #expect(applied.filter(\.isEmpty).count == 3, "the later ones find nothing to do")

        let check = try PostgresConnection(url: url)
        let rows = try check.execute(
            Statement(name: "count_versions", sql: "SELECT count(*), max(version) FROM schema_migrations"))
        #expect(rows.int(0, 0) == Int64(Migrations.all.count))
        #expect(rows.int(0, 1) == Int64(Migrations.latestVersion))
        // Running again is a no-op.
        #expect(try Migrations.migrate(check) == [])
    }
}

/// Migration 3 changes column types under existing rows: a database at version 2 with clusters, deployments and
/// events keeps every value through the later migrations, and the new constraints hold.
@Suite(.serialized) struct MigrationUpgradeTests {
    @Test func version2DataSurvivesMigration3AndItsConstraintsHold() throws {
        let (stack, url) = try freshDatabase("upgrade")
        defer { stack.stop() }
        let connection = try PostgresConnection(url: url)
        #expect(try Migrations.migrate(connection, upTo: 2) == [1, 2])
        try connection.unsafeExecute(
            script: """
                INSERT INTO users (id, username, password_hash) VALUES (1, 'alice', 'x');
                INSERT INTO clusters (id, owner_id, name, total_ram, total_cpu, total_gpu, available_ram, available_cpu,
                                      available_gpu, version, next_seq)
                    VALUES (1, 1, 'c', 10, 10000, 1, 4, 9000, 1, 3, 3);
                INSERT INTO deployments (id, cluster_id, owner_id, name, image_path, ram_required, cpu_required,
                                         gpu_required, priority, status, seq, started_at)
                    VALUES (1, 1, 1, 'a', 'registry.example.com/a:1', 6, 1000, 0, 2, 'Running', 1, now()),
                           (2, 1, 1, 'b', 'registry.example.com/b:1', 8, 1000, 1, 1, 'Pending', 2, NULL);
                INSERT INTO deployment_events (deployment_id, cluster_id, kind, caused_by)
                    VALUES (1, 1, 'Queued', NULL), (1, 1, 'Started', NULL), (2, 1, 'Queued', NULL);
                """)
        #expect(try Migrations.migrate(connection) == Array(3...Migrations.latestVersion))

        let rows = try connection.unsafeExecute(
            script: "SELECT id, status::text, ram_required, name FROM deployments ORDER BY id")
        #expect(rows.rowCount == 2)
        #expect(rows.string(0, 1) == "Running" && rows.int(0, 2) == 6 && rows.string(0, 3) == "a")
        #expect(rows.string(1, 1) == "Pending" && rows.int(1, 2) == 8)
        let pending = try connection.unsafeExecute(
            script: "SELECT count(*) FROM deployments WHERE cluster_id = 1 AND status = 'Pending'")
        #expect(pending.int(0, 0) == 1)
        let events = try connection.unsafeExecute(
            script: "SELECT string_agg(kind::text, ',' ORDER BY id) FROM deployment_events")
        #expect(events.string(0, 0) == "Queued,Started,Queued")

        // Accounting, statuses, kinds and amounts are still refused when wrong.
        for bad in [
            "UPDATE clusters SET available_ram = 11 WHERE id = 1",
            "UPDATE clusters SET available_cpu = -1 WHERE id = 1",
            "UPDATE deployments SET status = 'Lost' WHERE id = 1",
            "INSERT INTO deployment_events (deployment_id, cluster_id, kind) VALUES (1, 1, 'Vanished')",
            "UPDATE deployments SET ram_required = -1 WHERE id = 2",
            "UPDATE deployments SET name = '' WHERE id = 2",
            "UPDATE deployments SET name = 'a' WHERE id = 2",  // names are unique per tenant
            """
            INSERT INTO clusters (owner_id, name, total_ram, total_cpu, total_gpu, available_ram, available_cpu,
                                  available_gpu) VALUES (1, 'c', 1, 1, 1, 1, 1, 1)
            """,
        ] {
            #expect(throws: PostgresError.self, "\(bad)") { try connection.unsafeExecute(script: bad) }
        }
    }
}

/// A database migrated by another build (its migration 3 recorded under another name, as when a migration is reverted
/// and its number reused) is refused, by `migrate` and by a starting master at its first attempt, instead of being
/// migrated further or retried for 30 seconds.
@Suite(.serialized) struct MigrationMismatchTests {
    @Test func aMigrationRecordedUnderAnotherNameIsRefusedAtOnce() throws {
        let (stack, url) = try freshDatabase("mismatch")
        defer { stack.stop() }
        let connection = try PostgresConnection(url: url)
        #expect(try Migrations.migrate(connection, upTo: 3) == [1, 2, 3])
        try connection.unsafeExecute(
            script: "UPDATE schema_migrations SET name = 'scheduling in PL/pgSQL' WHERE version = 3")
        do {
            _ = try Migrations.migrate(connection)
            Issue.record("a mismatched migration was accepted")
        } catch {
            #expect(error.message.contains(#"migration 3 "scheduling in PL/pgSQL", but this build's migration 3 is"#))
            #expect(!error.connectionLost)
        }
        let versions = try connection.unsafeExecute(script: "SELECT max(version) FROM schema_migrations")
        #expect(versions.int(0, 0) == 3, "nothing more was applied")

        let (pid, directory) = try startMaster(databaseURL: url)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let status = Spawn.wait(pid)
        let error = (try? String(contentsOfFile: directory + "/err", encoding: .utf8)) ?? ""
        #expect(status != 0 && status < 128, "\(status)")
        #expect(error.components(separatedBy: "migration failed").count == 2, "one attempt:\n\(error)")
        #expect(error.contains("it was migrated by another build"), "\(error)")
        #expect(error.contains(#"msg="cannot start" error="the database cannot be migrated"#), "\(error)")
    }
}

/// A master started before PostgreSQL accepts connections keeps trying for about 30 seconds and migrates once it
/// can. Here PostgreSQL's socket appears 4 seconds after the start (the retries once took 3 seconds in all: the
/// migrator's SIGCHLD cut every wait between them short).
@Suite(.serialized) struct LatePostgreSQLTests {
    @Test func aMasterStartedBeforePostgreSQLMigratesOnceItAnswers() throws {
        let (stack, url) = try freshDatabase("late")
        defer { stack.stop() }
        let host = try #require(url.range(of: "host=[^&]+", options: .regularExpression))
        var template = Array("/tmp/hvt-socket.XXXXXX".utf8CString)
        let socketFolder = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: socketFolder) }
        var late = url
        late.replaceSubrange(host, with: "host=" + socketFolder)

        let (pid, directory) = try startMaster(databaseURL: late)
        defer {
            kill(pid, SIGTERM)
            _ = Spawn.wait(pid)
            try? FileManager.default.removeItem(atPath: directory)
        }
        sleep(4)
        try FileManager.default.createSymbolicLink(
            atPath: socketFolder + "/.s.PGSQL.5432", withDestinationPath: url[host].dropFirst(5) + "/.s.PGSQL.5432")
        let connection = try PostgresConnection(url: url)
        let latest = Statement(name: "latest", sql: "SELECT max(version) FROM schema_migrations")
        var version: Int64?
        for _ in 0..<100 where version != Int64(Migrations.latestVersion) {
            usleep(100_000)
            version = (try? connection.execute(latest))?.int(0, 0)
        }
        #expect(version == Int64(Migrations.latestVersion))
    }
}

/// Scoped reads use the tenant indexes: beside an organization with 5,000 deployments and 2,000 clusters, a user with
/// 30,000 finished deployments and two users with a cluster each and no deployment, every tenant reads a page of its
/// list, or a row by name, without PostgreSQL reading more rows or pages than the page needs, from the cached generic
/// plans every connection runs. (With the tenant and status as equalities, the generic plans walked the whole table's
/// id order for a tenant with none; with the status bounded by a row comparison alone, the walk read on through the
/// tenant's rows of later statuses.)
@Suite(.serialized) struct TenantIndexTests {
    @Test func scopedReadsUseTheTenantIndexes() throws {
        let (stack, _, connection) = try migratedDatabase("tenant")
        defer { stack.stop() }
        try connection.unsafeExecute(
            script: """
                INSERT INTO organizations (id, name, invite_code) VALUES (1, 'acme', repeat('x', 22));
                INSERT INTO users (id, username, password_hash, organization_id, role) VALUES (1, 'alice', 'x', 1, 'admin');
                INSERT INTO users (id, username, password_hash) SELECT i, 'user' || i, 'x' FROM generate_series(2, 4) i;
                INSERT INTO clusters (id, organization_id, owner_id, name, total_ram, total_cpu, total_gpu,
                                      available_ram, available_cpu, available_gpu)
                    SELECT i, 1, 1, 'c' || i, 10, 10, 0, 10, 10, 0 FROM generate_series(1, 2000) i;
                INSERT INTO clusters (id, owner_id, name, total_ram, total_cpu, total_gpu, available_ram, available_cpu,
                                      available_gpu)
                    SELECT 2000 + i, i, 'mine', 10, 10, 0, 10, 10, 0 FROM generate_series(2, 4) i;
                INSERT INTO deployments (cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                         cpu_required, gpu_required, priority, status, seq)
                    SELECT 1, 1, 1, 'd' || i, 'example.com/a', 1, 1, 0, 0, 'Pending', i FROM generate_series(1, 5000) i;
                INSERT INTO deployments (cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                         cpu_required, gpu_required, priority, status, seq, finished_at)
                    SELECT 2, 1, 1, 'r' || i, 'example.com/a', 1, 1, 0, 0, 'Running'::deployment_status, i, NULL::timestamptz
                    FROM generate_series(1, 3) i
                    UNION ALL
                    SELECT 3, 1, 1, 'f' || i, 'example.com/a', 1, 1, 0, 0, 'Completed'::deployment_status, i, now()
                    FROM generate_series(1, 3) i;
                INSERT INTO deployments (cluster_id, owner_id, name, image_path, ram_required, cpu_required,
                                         gpu_required, priority, status, seq, finished_at)
                    SELECT 2003, 3, 'done' || i, 'example.com/a', 1, 1, 0, 0, 'Completed', i, now()
                    FROM generate_series(1, 30000) i;
                ANALYZE;
                """)
        let (alice, bob, carol) = (["1", String(Int64.max)], ["2", String(Int64.max)], ["3", String(Int64.max)])
        let reads: [(Statement, [String?], id: Int64?)] = [
            (DeploymentsV1Handler.pageOfAll, alice + ["0", "101"], 1),
            (DeploymentsV1Handler.pageOfAll, alice + ["4999", "101"], 5000),
            (DeploymentsV1Handler.pageOfAll, bob + ["0", "101"], nil),
            // A filter that matches few of the tenant's 5,006 deployments reads those few.
            (DeploymentsV1Handler.pageOfStatus, alice + ["0", "101", "Running", nil], 5001),
            (DeploymentsV1Handler.pageOfStatus, alice + ["5001", "101", "Running", "2"], 5002),
            (DeploymentsV1Handler.pageOfStatus, alice + ["4000", "101", "Pending", "1"], 4001),
            (DeploymentsV1Handler.pageOfStatus, alice + ["0", "101", "Completed", "3"], 5004),
            // A status that most rows have, for a tenant with none; one that sorts before all of a tenant's rows.
            (DeploymentsV1Handler.pageOfStatus, bob + ["0", "101", "Completed", nil], nil),
            (DeploymentsV1Handler.pageOfStatus, carol + ["0", "101", "Running", nil], nil),
            (DeploymentsV1Handler.pageOfStatus, carol + ["0", "101", "Completed", nil], 5007),
            (DeploymentsV1Handler.pageOfAll, carol + ["35000", "101"], 35001),
            (DeploymentsV1Handler.pageOfCluster, alice + ["0", "101", "3"], 5004),
            (DeploymentsV1Handler.pageOfCluster, alice + ["5004", "101", "3"], 5005),
            (DeploymentsV1Handler.pageOfCluster, alice + ["4000", "101", "1"], 4001),
            (DeploymentsV1Handler.pageOfCluster, bob + ["0", "101", "3"], nil),
            (ClustersV1Handler.page, alice + ["0", "101"], 1), (ClustersV1Handler.page, bob + ["0", "101"], 2002),
            (DeploymentsHandler.byName, bob + ["d1"], nil), (DeploymentsHandler.byName, alice + ["d4000"], 4000),
            (ClustersHandler.byName, bob + ["mine"], 2002), (ClustersHandler.byName, alice + ["c1500"], 1500),
        ]
        for (index, (statement, parameters, id)) in reads.enumerated() {
            // The plan of the very prepared statement the handlers execute, for these values.
            let arguments = parameters.map { $0.map { $0.allSatisfy(\.isNumber) ? $0 : "'\($0)'" } ?? "NULL" }
            let explain = Statement(
                name: "explain_\(index)",
                sql:
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE \(statement.name)(\(arguments.joined(separator: ", ")))"
            )
            #expect(try connection.execute(statement, parameters).int(0, 0) == id, "\(statement.name) \(parameters)")
            let plan = try connection.execute(explain, [])
            let lines = (0..<plan.rowCount).compactMap { plan.string($0, 0) }
            func counts(after labels: [String]) -> [Int] {
                lines.flatMap { line in
                    labels.compactMap { label in
                        line.split(separator: label).dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
                    }
                }
            }
            // A page's rows sit on a few heap pages here (they were inserted in id order), beside an index path.
            let rows = counts(after: [" rows=", "Rows Removed by Filter: "])
            let pages = counts(after: ["Buffers: shared hit=", " read="])
            #expect(
                rows.allSatisfy { $0 <= 101 } && pages.allSatisfy { $0 <= 30 },
                "\(statement.name):\n\(lines.joined(separator: "\n"))")
        }
    }
}

/// Every connection runs its statements from generic plans made once, with whatever statistics PostgreSQL has when
/// it first runs them: on a fresh install none (tables empty and never analyzed), later whatever the last `ANALYZE`
/// saw. So a statement must walk the same indexes whatever they say. Until 2026-12-06 the completions'
/// `UPDATE … WHERE d.id = t.id AND d.status = 'Running'`, planned on empty tables, read the whole running index for
/// its one row under the cluster's lock (0.2 → 1.2 ms per completion in a 25-second bench row, until autovacuum
/// first analyzed the table); the smallest pending request (`min()`) and a deployment's place in the queue were read
/// along the wrong pending index, and a page of a tenant's list read all the tenant's rows along its name index and
/// sorted them; and planned while few deployments were pending, every walk of a queue took a smaller pending index
/// and sorted. Here each statement the service runs on clusters and deployments (`hvctl`'s included) is planned on the
/// freshly migrated database, with 100,000 deployments analyzed, and with all but 0.2 % of them finished (where a
/// completion's look-up of its row also walked the small running index instead of the primary key); the indexes (or
/// sequential scans) each plan reads must be the same, and none may read a whole table of deployments or events (a
/// cluster's delete read every event).
@Suite(.serialized) struct GenericPlanTests {
    @Test func genericPlansReadTheSameIndexesWithoutStatisticsAsWithThem() throws {
        let (stack, url, setup) = try migratedDatabase("plans")
        defer { stack.stop() }
        // What this test shows is why autovacuum never analyzes these tables (migrations 8 and 10).
        let neverAnalyzed = try TestDatabase(url).query(
            """
            SELECT string_agg(relname::text, ',' ORDER BY relname) FROM pg_class
            WHERE 'autovacuum_analyze_threshold=2000000000' = ANY(reloptions)
            """)
        #expect(neverAnalyzed.string(0, 0) == "clusters,deployment_events,deployments")
        try setup.unsafeExecute(
            script: ["organizations", "users", "clusters", "deployments", "deployment_events"]
                .map { "ALTER TABLE \($0) SET (autovacuum_enabled = off);" }.joined())
        let statements =
            [
                SchedulerStatements.lock, SchedulerStatements.durable, SchedulerStatements.createAll,
                SchedulerStatements.completeAll,
                SchedulerStatements.clusterForDelete, SchedulerStatements.clusterForCreate,
                SchedulerStatements.lockDeployment, SchedulerStatements.lockClusters,
                SchedulerStatements.deploymentForComplete,
                SchedulerStatements.queueAfterDeployment, SchedulerStatements.runningBelowQueueHead,
                SchedulerStatements.runningFromTail, SchedulerStatements.pendingMinimum,
                SchedulerStatements.pendingMinimumForCompletion, SchedulerStatements.pendingAfter,
                SchedulerStatements.apply, ClusterRecord.statement,
                // Reads outside the lock.
                SchedulerStatements.clusterForWhatIf, SchedulerStatements.pendingAhead, SchedulerStatements.sizes,
                DeploymentsHandler.byID, DeploymentsHandler.byName, ClustersHandler.insert, ClustersHandler.byID,
                ClustersHandler.byName,
                DeploymentsV1Handler.detail, DeploymentsV1Handler.history, DeploymentsV1Handler.pageOfAll,
                DeploymentsV1Handler.pageOfCluster, DeploymentsV1Handler.pageOfStatus, ClustersV1Handler.detail,
                ClustersV1Handler.page,
                // hvctl.
                ControlStatements.clusterIDs, ControlStatements.recomputeAvailable, ControlStatements.resetLookUpStarts,
            ] + SchedulerStatements.deleteCluster
        let unanalyzed = try accessPaths(statements, url)
        // A first cluster, analyzed: 1,000 running at one priority, 2,000 waiting at another.
        try setup.unsafeExecute(
            script: """
                INSERT INTO organizations (id, name, invite_code) VALUES (2, 'first', repeat('y', 22));
                INSERT INTO users (id, username, password_hash, organization_id, role)
                    VALUES (30000, 'first', 'x', 2, 'member');
                INSERT INTO clusters (id, organization_id, owner_id, name, total_ram, total_cpu, total_gpu,
                                      available_ram, available_cpu, available_gpu, next_seq)
                    VALUES (1000, 2, 30000, 'first', 1000, 1000, 1, 0, 0, 1, 3001);
                INSERT INTO deployments (cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                         cpu_required, gpu_required, priority, status, seq, started_at)
                    SELECT 1000, 2, 30000, 'first' || i, 'example.com/a', 1 + 999 * (i / 1001), 1 + 999 * (i / 1001),
                           i / 1001, 1 - i / 1001, (CASE WHEN i <= 1000 THEN 'Running' ELSE 'Pending' END)
                               ::deployment_status, i, CASE WHEN i <= 1000 THEN now() END
                    FROM generate_series(1, 3000) i;
                ANALYZE;
                """)
        let first = try accessPaths(statements, url)
        try setup.unsafeExecute(
            script: """
                INSERT INTO organizations (id, name, invite_code) VALUES (1, 'acme', repeat('x', 22));
                INSERT INTO users (id, username, password_hash, organization_id, role)
                    SELECT i, 'user' || i, 'x', 1, 'member' FROM generate_series(1, 20000) i;
                INSERT INTO clusters (id, organization_id, owner_id, name, total_ram, total_cpu, total_gpu,
                                      available_ram, available_cpu, available_gpu, next_seq)
                    SELECT i, 1, 1, 'c' || i, 100000, 100000, 0, 95000, 95000, 0, 50001 FROM generate_series(1, 200) i;
                INSERT INTO deployments (cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                         cpu_required, gpu_required, priority, status, seq, started_at, finished_at)
                    SELECT 1 + i % 200, 1, 1, 'd' || i, 'example.com/a', 1, 1, 0, i % 7,
                           (CASE WHEN i % 10 < 6 THEN 'Completed' WHEN i % 10 < 8 THEN 'Running' ELSE 'Pending' END)
                               ::deployment_status,
                           i / 200, now(), CASE WHEN i % 10 < 6 THEN now() END
                    FROM generate_series(1, 100000) i;
                INSERT INTO deployment_events (deployment_id, cluster_id, kind)
                    SELECT id, cluster_id, 'Queued' FROM deployments;
                ANALYZE;
                """)
        let analyzed = try accessPaths(statements, url)
        // A young install with deep queues: most deployments wait, so a status index hardly narrows a look-up.
        try setup.unsafeExecute(
            script: """
                UPDATE deployments SET status = 'Pending', started_at = NULL, finished_at = NULL
                WHERE status = 'Completed' OR id % 10 = 6;
                ANALYZE;
                """)
        let waiting = try accessPaths(statements, url)
        // A long-lived install: nearly everything has finished, so few rows match a status index.
        try setup.unsafeExecute(
            script: "UPDATE deployments SET status = 'Completed' WHERE id % 1000 NOT IN (6, 8); ANALYZE;")
        let finished = try accessPaths(statements, url)
        // The smallest requests are read along their own indexes, whose predicate only these look-ups state.
        #expect(
            analyzed[SchedulerStatements.pendingMinimum.name]
                == ["index deployments_pending_cpu", "index deployments_pending_gpu", "index deployments_pending_ram"])
        let statuses = [
            SchedulerStatements.createAll, SchedulerStatements.completeAll, SchedulerStatements.queueAfterDeployment,
            SchedulerStatements.runningBelowQueueHead, SchedulerStatements.runningFromTail,
            SchedulerStatements.pendingAfter, SchedulerStatements.pendingAhead,
        ].map(\.name)
        for statement in statements {
            let name = statement.name
            #expect(unanalyzed[name] == analyzed[name], "\(name): without statistics, and with")
            #expect(finished[name] == analyzed[name], "\(name): with 99.8 % of deployments finished, and without")
            #expect(waiting[name] == analyzed[name], "\(name): with 70 % of deployments waiting, and without")
            #expect(
                !(analyzed[name] ?? []).contains { $0 == "seq deployments" || $0 == "seq deployment_events" },
                "\(name) reads a whole table")
            // The scheduler's look-ups read one status: along a cluster's deployments in `seq` order they would pass
            // every other deployment created since.
            for (paths, when) in [(analyzed, "analyzed"), (first, "with one young cluster analyzed")] {
                #expect(
                    !statuses.contains(name) || !(paths[name] ?? []).contains("index deployments_cluster_id_seq_key"),
                    "\(name) walks a cluster's deployments in seq order, \(when)")
            }
        }
    }

    /// A connection plans the statements a batch runs under its clusters' locks as it opens, so that its first
    /// change does not parse and plan them under a lock: each is prepared, and its generic plan made once (by
    /// `EXPLAIN`, which counts as one use) and kept.
    @Test func theBatchStatementsArePlannedAsAConnectionOpens() throws {
        let (stack, url, _) = try migratedDatabase("planned")
        defer { stack.stop() }
        let log = Log(path: nil, level: .error, role: "test")
        let database = Database(url: url, log: log, planned: SchedulerStatements.planned)
        let prepared = Statement(
            name: "t_prepared",
            sql: "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE name <> 't_prepared'")
        let plans = try database.run { connection in
            let result = try connection.execute(prepared)
            return Set(
                (0..<result.rowCount).map { "\(result.string($0, 0)!) \(result.int($0, 1)!) \(result.int($0, 2)!)" })
        }
        #expect(plans == Set(SchedulerStatements.planned.map { "\($0.name) 1 0" }))

        // A statement PostgreSQL refuses to plan leaves the connection to serve the rest.
        let refused = Database(
            url: url, log: log, planned: [Statement(name: "t_refused", sql: "SELECT * FROM no_such_table")])
        #expect(try refused.run { try $0.execute(Statement(name: "t_one", sql: "SELECT 1")).int(0, 0) } == 1)
    }

    /// What each statement's generic plan reads, on a new connection: `index <name>` or `seq <table>`, sorted.
    private func accessPaths(_ statements: [Statement], _ url: String) throws -> [String: [String]] {
        let connection = try PostgresConnection(url: url)
        var paths: [String: [String]] = [:]
        for statement in statements {
            paths[statement.name] = try connection.explain(statement).compactMap { line in
                guard
                    let match = line.firstMatch(
                        of:
                            /(Seq Scan on|Index(?: Only)? Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)/
                    )
                else { return nil }
                return (match.1 == "Seq Scan on" ? "seq " : "index ") + match.2
            }.sorted()
        }
        return paths
    }
}

/// Timestamps read through `PostgresResult.timestamp` are the instants PostgreSQL stores, in the API's form, whatever
/// time zone and date style the database is configured with.
@Suite(.serialized) struct TimestampTextTests {
    @Test func timestampsReadAsTheUTCInstantToTheMicrosecond() throws {
        let (stack, url) = try freshDatabase("timestamps")
        defer { stack.stop() }
        try PostgresConnection(url: url).unsafeExecute(
            script: """
                DO $$ BEGIN
                    EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'America/St_Johns');
                    EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY');
                END $$
                """)
        let connection = try PostgresConnection(url: url)
        // Whole seconds, fractions with trailing zeros, every hour of a day across a daylight-saving change.
        let result = try connection.unsafeExecute(
            script: """
                SELECT t, to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                FROM (SELECT timestamptz '2026-03-07 12:00:00+00' + i * interval '1 hour 0.010203 s' AS t
                      FROM generate_series(0, 47) i
                      UNION ALL VALUES (timestamptz '2026-12-06 04:26:01.5+00'), ('0999-01-02 03:04:05.000001+00')) s
                """)
        #expect(result.rowCount == 50)
        for row in 0..<result.rowCount {
            #expect(result.timestamp(row, 0) == result.string(row, 1), "\(result.string(row, 0) ?? "NULL")")
        }
    }
}

/// Migration 8 leaves `clusters` out of autovacuum's regular rounds on this premise: every scheduler change rewrites its
/// cluster's row but no indexed column of it, so every update is heap-only (no index entries) and its old versions are
/// pruned on their page. Creates that start, wait and preempt, and completions that admit, into one cluster on one
/// connection of a fresh database: every update of `clusters` is counted as heap-only.
@Suite(.serialized) struct ClusterVacuumTests {
    @Test func everySchedulerUpdateOfAClusterIsHeapOnly() throws {
        let (stack, url, admin) = try migratedDatabase("hot")
        defer { stack.stop() }
        try admin.unsafeExecute(
            script: """
                INSERT INTO users (id, username, password_hash) VALUES (1, 'alice', 'x');
                INSERT INTO clusters (id, owner_id, name, total_ram, total_cpu, total_gpu, available_ram, available_cpu,
                                      available_gpu)
                    VALUES (1, 1, 'c', 4, 4000, 0, 4, 4000, 0);
                """)
        let check = try TestDatabase(url)
        let options = try check.query(
            "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'clusters'")
        #expect(options.string(0, 0)?.contains("autovacuum_vacuum_threshold=10000") == true)

        let scheduler = stack.scheduler(database: url)
        let caller = Caller(id: 1, issuedAt: Int64(Date().timeIntervalSince1970))
        var statuses: [String: Int] = [:]
        for round in 0..<150 {
            // Two that fit or wait at priority 1, and one at a rising priority, which preempts once the cluster is full.
            let creates = [(2, 1), (1, 1), (1, Int32(2 + round))].enumerated().map { index, shape in
                ClusterScheduler.Change.create(
                    ClusterScheduler.NewDeployment(
                        name: "d\(round)-\(index)", imagePath: "registry.example.com/app:1",
                        request: Resources(ram: Int64(shape.0), cpu: 1000, gpu: 0), priority: shape.1),
                    in: 1, by: caller)
            }
            let made = try scheduler.make(creates).map { try $0.get() }
            for row in made { statuses[row.status, default: 0] += 1 }
            // Complete the oldest running deployment: the room it leaves admits waiting work.
            let running = try check.query(
                "SELECT id FROM deployments WHERE status = 'Running' ORDER BY priority, seq LIMIT 1")
            if let id = running.int(0, 0) { _ = try scheduler.make([.complete(id, by: caller)])[0].get() }
        }
        #expect((statuses["Running"] ?? 0) > 100 && (statuses["Pending"] ?? 0) > 100, "\(statuses)")

        // The scheduler's backend flushes its counters when it next goes idle.
        _ = try scheduler.database.run {
            try $0.execute(Statement(name: "t_flush", sql: "SELECT pg_stat_force_next_flush()"))
        }
        let counts = try check.query(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'clusters'")
        let updates = counts.int(0, 0) ?? 0
        #expect(updates >= 300)
        #expect(counts.int(0, 1) == updates)
    }
}

/// Starts hypervisord on `databaseURL` in a fresh state folder (its stderr in `err` there), with an unreachable Redis.
private func startMaster(databaseURL url: String) throws -> (pid: pid_t, directory: String) {
    let binary =
        ProcessInfo.processInfo.environment["HV_TEST_BINARY"]
        ?? Stack.packageRoot.appendingPathComponent(".build/debug/hypervisord").path
    var template = Array("/tmp/hvt-master.XXXXXX".utf8CString)
    let directory = String(cString: try #require(mkdtemp(&template)))
    let pid = try Spawn.spawn(
        binary, [],
        environment: [
            "PATH": "/usr/bin:/bin", "HV_STATE_DIR": directory, "HV_WORKERS": "1",
            "JWT_SECRET_KEY": String(repeating: "k", count: 48), "SQL_DB_URL": url, "REDIS_HOST": "127.0.0.1",
        ], directory: directory, output: directory + "/out", error: directory + "/err")
    return (pid, directory)
}

/// A started private stack (stop it when done) and a fresh empty database in its PostgreSQL, as the superuser's libpq
/// URL.
private func freshDatabase(_ prefix: String) throws -> (Stack, String) {
    let stack = try Stack()
    do {
        try stack.start()
        let admin = try PostgresConnection(url: stack.superuserURL())
        let name = "\(prefix)_\(getpid())_\(Int(Date().timeIntervalSince1970))"
        try admin.unsafeExecute(script: "CREATE DATABASE \(name)")
        return (stack, stack.superuserURL(database: name))
    } catch {
        stack.stop()
        throw error
    }
}

/// `freshDatabase` migrated to the latest version, and a connection to it.
private func migratedDatabase(_ prefix: String) throws -> (Stack, String, PostgresConnection) {
    let (stack, url) = try freshDatabase(prefix)
    do {
        let connection = try PostgresConnection(url: url)
        _ = try Migrations.migrate(connection)
        return (stack, url, connection)
    } catch {
        stack.stop()
        throw error
    }
}

private final class ResultsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Result<[Int], any Error>] = []
    func append(_ result: Result<[Int], any Error>) { lock.withLock { stored.append(result) } }
    var values: [Result<[Int], any Error>] { lock.withLock { stored } }
}
