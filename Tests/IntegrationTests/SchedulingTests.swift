import Domain
import Foundation
import Testing

@testable import HVFastCGI

#if canImport(Glibc)
    import Glibc
#endif

/// The scheduler end to end (through nginx and the worker pool) and against the real PostgreSQL and Redis: the seed
/// API's deployment endpoints, a preemption story, the transaction applying exactly `Scheduler.plan(for:)`,
/// concurrency on one cluster, per-cluster locking, and the Redis queue snapshot.
@Suite(.serialized)
struct SchedulingTests {
    /// One stack for the whole suite, started on first use and stopped when the test process exits.
    private static let started = Stack.started()

    let stack: Stack
    let api: SchedulingAPI

    init() throws {
        try self.init(stack: Self.started.get())
    }

    /// The suite's checks against another stack.
    private init(stack: Stack) {
        self.stack = stack
        api = SchedulingAPI(client: stack.client)
    }

    // MARK: - Seed API end to end

    @Test func seedScenarioRunsGetsAndCompletesADeploymentThroughNginx() throws {
        let owner = try api.register("sched-seed-owner")
        let cluster = try api.createCluster(owner, name: "seed cluster", ram: 140, cpu: "140", gpu: 140)

        let created = try api.createDeployment(
            owner, name: "seed-dep", cluster: cluster, image: "docker.io/library/nginx:1.25", ram: 35, cpu: "35",
            gpu: 35, priority: 1)
        #expect(created.status == 200, "\(created.text)")
        let object = try #require(created.jsonObject, "\(created.text)")
        let id = try #require(int(object["id"]))
        let expected: [String: Any] = [
            "id": id, "name": "seed-dep", "cluster_id": cluster, "image_path": "docker.io/library/nginx:1.25",
            "ram_required": 35, "cpu_required": 35.0, "gpu_required": 35, "status": "Running", "priority": 1,
        ]
        expectSameObject(object, expected)
        // FastAPI returned the float: `35.0`, not `35`.
        #expect(created.text.range(of: #""cpu_required"\s*:\s*35\.0\s*[,}]"#, options: .regularExpression) != nil)
        try expectAvailable(owner, cluster, ram: 105, cpu: 105, gpu: 105)

        // Every lookup form answers with the same object.
        let encodedName = "seed-dep"
        let lookups: [(String, HTTPResponse)] = [
            ("id in query, slash", try api.get("/deployments/get_deployment/?id=\(id)", owner)),
            ("id in query, no slash", try api.get("/deployments/get_deployment?id=\(id)", owner)),
            ("name in query, slash", try api.get("/deployments/get_deployment/?deployment_name=\(encodedName)", owner)),
            (
                "name in query, no slash",
                try api.get("/deployments/get_deployment?deployment_name=\(encodedName)", owner)
            ),
            ("id in body", try api.get("/deployments/get_deployment/", owner, body: ["id": id])),
            ("name in body", try api.get("/deployments/get_deployment", owner, body: ["deployment_name": "seed-dep"])),
            (
                "both in query",
                try api.get("/deployments/get_deployment/?id=\(id)&deployment_name=\(encodedName)", owner)
            ),
            (
                "both in body",
                try api.get("/deployments/get_deployment/", owner, body: ["id": id, "deployment_name": "seed-dep"])
            ),
        ]
        for (form, response) in lookups {
            #expect(response.status == 200, "\(form): \(response.status) \(response.text)")
            expectSameObject(response.jsonObject ?? [:], expected, form)
        }

        // Without cluster_id: a FastAPI 422 list naming the field.
        let missing = try api.postJSON(
            "/deployments/create/", owner,
            #"{"name":"no-cluster","image_path":"nginx","ram_required":1,"cpu_required":1,"gpu_required":0,"priority":1}"#
        )
        #expect(missing.status == 422)
        #expect(
            issues(missing).contains { $0.loc == ["body", "cluster_id"] && $0.type == "missing" }, "\(missing.text)")

        // Bigger than the cluster's total: refused, whatever is free.
        let tooBig = try api.createDeployment(
            owner, name: "seed-too-big", cluster: cluster, ram: 141, cpu: "1", gpu: 0, priority: 1)
        #expect(tooBig.status == 422)
        expectSameObject(
            tooBig.jsonObject ?? [:], ["detail": "Not Enough Resources on the cluster for this deployment"])
        let tooManyGPUs = try api.createDeployment(
            owner, name: "seed-too-many-gpus", cluster: cluster, ram: 1, cpu: "1", gpu: 141, priority: 1)
        #expect(tooManyGPUs.status == 422)
        expectSameObject(
            tooManyGPUs.jsonObject ?? [:], ["detail": "Not Enough Resources on the cluster for this deployment"])

        // Bad image references.
        for image in ["library/Nginx:latest", "nginx@sha256:1234", "nginx@md5:" + String(repeating: "a", count: 64)] {
            let response = try api.createDeployment(
                owner, name: "seed-bad-image", cluster: cluster, image: image, ram: 1, cpu: "1", gpu: 0, priority: 1)
            #expect(response.status == 422, "\(image): \(response.text)")
            #expect(issues(response).contains { $0.loc == ["body", "image_path"] }, "\(image): \(response.text)")
        }

        // Priorities are Int32: the bounds are accepted, one beyond them is not.
        for priority in ["2147483648", "-2147483649", "9223372036854775808"] {
            let response = try api.createDeployment(
                owner, name: "seed-bad-priority", cluster: cluster, ram: 1, cpu: "1", gpu: 0, priorityText: priority)
            #expect(response.status == 422, "\(priority): \(response.text)")
            #expect(issues(response).contains { $0.loc == ["body", "priority"] }, "\(priority): \(response.text)")
        }
        for (name, priority) in [("seed-max-priority", "2147483647"), ("seed-min-priority", "-2147483648")] {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: 1, cpu: "0.5", gpu: 0, priorityText: priority)
            #expect(response.status == 200, "\(priority): \(response.text)")
            #expect(int(response.jsonObject?["priority"]) == Int64(priority))
            #expect(response.jsonObject?["status"] as? String == "Running")
        }
        try expectAvailable(owner, cluster, ram: 103, cpu: 104, gpu: 105)

        // Another tenant sees nothing, and cannot complete or deploy into it.
        let stranger = try api.register("sched-seed-stranger")
        for path in [
            "/deployments/get_deployment/?id=\(id)", "/deployments/get_deployment/?deployment_name=\(encodedName)",
        ] {
            let response = try api.get(path, stranger)
            #expect(response.status == 404, "\(path): \(response.text)")
        }
        let strangerComplete = try api.complete(stranger, id)
        #expect(strangerComplete.status == 404, "\(strangerComplete.text)")
        let strangerCreate = try api.createDeployment(
            stranger, name: "intruder", cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 1)
        #expect(strangerCreate.status == 404, "\(strangerCreate.text)")
        #expect(try api.getJSON("/deployments/get_deployment/?id=\(id)", owner)["status"] as? String == "Running")

        // Complete (id in the body), then the resources are back.
        let completed = try api.postJSON("/deployments/complete/", owner, #"{"id":\#(id)}"#)
        #expect(completed.status == 200, "\(completed.text)")
        var done = expected
        done["status"] = "Completed"
        expectSameObject(completed.jsonObject ?? [:], done)
        expectSameObject(try api.getJSON("/deployments/get_deployment/?id=\(id)", owner), done)
        try expectAvailable(owner, cluster, ram: 138, cpu: 139, gpu: 140)

        // Completing again (query form, no slash): 409 naming the status; nothing changes.
        let again = try api.post("/deployments/complete?id=\(id)", owner)
        #expect(again.status == 409)
        let detail = try #require(again.jsonObject?["detail"] as? String, "\(again.text)")
        #expect(detail.contains("Completed"), "\(detail)")
        try expectAvailable(owner, cluster, ram: 138, cpu: 139, gpu: 140)

        // An unknown id is 404; a deployment can also be completed by its name.
        let unknown = try api.complete(owner, 987_654_321)
        #expect(unknown.status == 404 && unknown.text.contains("Deployment not found"), "\(unknown.text)")
        let named = try api.createDeployment(
            owner, name: "seed-by-name", cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 1)
        #expect(named.status == 200, "\(named.text)")
        let byName = try api.postJSON("/deployments/complete/", owner, #"{"deployment_name":"seed-by-name"}"#)
        #expect(byName.status == 200 && byName.jsonObject?["status"] as? String == "Completed", "\(byName.text)")
        try expectAvailable(owner, cluster, ram: 138, cpu: 139, gpu: 140)
    }

    // MARK: - Preemption story

    @Test func preemptionStoryFollowsTheGreedyPassStepByStep() throws {
        let owner = try api.register("sched-story")
        let cluster = try api.createCluster(owner, name: "story", ram: 10, cpu: "100", gpu: 2)
        var expected: [String: String] = [:]
        var ids: [String: Int64] = [:]

        func deploy(_ name: String, priority: Int32, ram: Int64, gpu: Int64 = 0, becomes status: String) throws {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: ram, cpu: "1", gpu: gpu, priority: priority)
            #expect(response.status == 200, "\(name): \(response.text)")
            ids[name] = try #require(int(response.jsonObject?["id"]), "\(response.text)")
            #expect(response.jsonObject?["status"] as? String == status, "\(name) answered \(response.text)")
            expected[name] = status
        }
        func check(_ step: String, availableRAM: Int64) throws {
            for (name, status) in expected.sorted(by: { $0.key < $1.key }) {
                let object = try api.getJSON("/deployments/get_deployment/?id=\(ids[name]!)", owner)
                #expect(object["status"] as? String == status, "after \(step): \(name) is \(object["status"] ?? "?")")
            }
            let clusterObject = try api.getJSON("/clusters/get_cluster/?id=\(cluster)", owner)
            #expect(int(clusterObject["available_ram"]) == availableRAM, "after \(step): \(clusterObject)")
        }

        try deploy("low-a", priority: 1, ram: 4, becomes: "Running")
        try deploy("low-b", priority: 1, ram: 4, becomes: "Running")
        try check("two low-priority deployments", availableRAM: 2)
        // Equal priority never preempts: it waits.
        try deploy("low-c", priority: 1, ram: 4, becomes: "Pending")
        try check("an equal-priority deployment that does not fit", availableRAM: 2)
        // A higher priority takes room from the lowest priority, newest first: low-b goes, low-a (older) stays.
        try deploy("high", priority: 5, ram: 5, becomes: "Running")
        expected["low-b"] = "Pending"
        try check("the high-priority deployment", availableRAM: 1)
        // Completing the preemptor: the victim (older than low-c) resumes before low-c.
        let completedHigh = try api.complete(owner, ids["high"]!)
        #expect(completedHigh.status == 200, "\(completedHigh.text)")
        expected["high"] = "Completed"
        expected["low-b"] = "Running"
        try check("completing high", availableRAM: 2)

        // Backfill: a big deployment of priority 1 waits (it would have to preempt its equals), and a small p0 one
        // uses the hole that neither it nor low-c can.
        try deploy("big", priority: 1, ram: 6, becomes: "Pending")
        try check("a big equal-priority deployment", availableRAM: 2)
        try deploy("tiny", priority: 0, ram: 2, becomes: "Running")
        try check("backfilling", availableRAM: 0)

        let completedB = try api.complete(owner, ids["low-b"]!)
        #expect(completedB.status == 200, "\(completedB.text)")
        expected["low-b"] = "Completed"
        expected["low-c"] = "Running"
        try check("completing low-b", availableRAM: 0)

        // The victim's history, in order, with the preemptor named.
        let database = try TestDatabase(stack.databaseURL)
        let events = try database.events(of: ids["low-b"]!)
        let story: [DeploymentEvent] = [
            DeploymentEvent(kind: "Queued", causedBy: nil), DeploymentEvent(kind: "Started", causedBy: nil),
            DeploymentEvent(kind: "Preempted", causedBy: ids["high"]!), DeploymentEvent(kind: "Started", causedBy: nil),
            DeploymentEvent(kind: "Completed", causedBy: nil),
        ]
        #expect(events == story)
        #expect(
            try database.events(of: ids["low-c"]!) == [
                DeploymentEvent(kind: "Queued", causedBy: nil), DeploymentEvent(kind: "Started", causedBy: nil),
            ])
        #expect(try database.events(of: ids["big"]!) == [DeploymentEvent(kind: "Queued", causedBy: nil)])
        let preemptions = try database.query(
            "SELECT preemptions FROM deployments WHERE id = $1", [String(ids["low-b"]!)]
        ).int(0, 0)
        #expect(preemptions == 1)
        let state = try database.clusterState(cluster)
        #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan())
        #expect(state.available == state.capacity - state.runningSum)
    }

    // MARK: - Durability

    /// A client is answered only once its change is on disk. The scheduler commits without waiting for the WAL flush,
    /// to release the cluster's lock first, and then waits for the flush; `pg_walinspect` reads only flushed WAL, so
    /// each change's commit record must be readable as soon as its answer arrives. The WAL writer's background flush
    /// is slowed to every 10 s meanwhile, so that it cannot hide a missing wait. Covers the one-round-trip and the
    /// planned paths: a create that fits, one that queues, one that preempts, and completions.
    @Test func everyChangeIsOnDiskBeforeItsClientIsAnswered() throws {
        let admin = try TestDatabase(stack.superuserURL())
        try admin.query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        try admin.query("ALTER SYSTEM SET wal_writer_delay = '10s'")
        try admin.query("SELECT pg_reload_conf()")
        defer {
            _ = try? admin.query("ALTER SYSTEM RESET wal_writer_delay")
            _ = try? admin.query("SELECT pg_reload_conf()")
        }
        Thread.sleep(forTimeInterval: 0.5)  // the WAL writer rereads its configuration between naps
        let owner = try api.register("sched-durable")
        let cluster = try api.createCluster(owner, name: "durable", ram: 10, cpu: "10", gpu: 0)

        func expectFlushed(_ step: String, _ id: Int64, since start: String) throws {
            let flushed = try #require(admin.query("SELECT pg_current_wal_flush_lsn()::text").string(0, 0))
            let ahead = try admin.query("SELECT $1::pg_lsn > $2::pg_lsn", [flushed, start]).string(0, 0)
            try #require(ahead == "t", "\(step): nothing flushed since the request (\(flushed) <= \(start))")
            let commits = try admin.query(
                """
                SELECT count(*) FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
                WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'
                    AND xid = (SELECT xmin FROM deployments WHERE id = $3)
                """, [start, flushed, String(id)])
            #expect(commits.int(0, 0) == 1, "\(step): its commit record was not flushed before the answer")
        }
        func change(_ step: String, _ request: () throws -> HTTPResponse, becomes status: String) throws -> Int64 {
            let start = try #require(admin.query("SELECT pg_current_wal_insert_lsn()::text").string(0, 0))
            let response = try request()
            try #require(response.status == 200, "\(step): \(response.text)")
            #expect(response.jsonObject?["status"] as? String == status, "\(step): \(response.text)")
            let id = try #require(int(response.jsonObject?["id"]), "\(step): \(response.text)")
            try expectFlushed(step, id, since: start)
            return id
        }
        func deploy(_ name: String, ram: Int64, priority: Int32, becomes status: String) throws -> Int64 {
            try change(
                name,
                {
                    try api.createDeployment(
                        owner, name: name, cluster: cluster, ram: ram, cpu: "1", gpu: 0, priority: priority)
                }, becomes: status)
        }

        let first = try deploy("fits-1", ram: 4, priority: 1, becomes: "Running")
        let second = try deploy("fits-2", ram: 4, priority: 1, becomes: "Running")
        _ = try deploy("queues", ram: 4, priority: 1, becomes: "Pending")
        let preempting = try deploy("preempts", ram: 6, priority: 9, becomes: "Running")
        _ = try change("complete the preemptor", { try api.complete(owner, preempting) }, becomes: "Completed")
        _ = try change("complete fits-1", { try api.complete(owner, first) }, becomes: "Completed")
        _ = try change("complete fits-2", { try api.complete(owner, second) }, becomes: "Completed")
    }

    // MARK: - The transaction applies exactly the plan

    @Test func preemptingCreateAppliesExactlyThePlanComputedFromPostgreSQL() throws {
        let owner = try api.register("sched-plan")
        let cluster = try api.createCluster(owner, name: "plan", ram: 100, cpu: "24", gpu: 6)
        var random = SchedulingRandom(seed: 0x5EED_0001)
        for index in 0..<30 {
            let response = try api.createDeployment(
                owner, name: "plan-fill-\(index)", cluster: cluster, ram: Int64.random(in: 3...16, using: &random),
                cpu: JSONNumber.text(millicores: Int64.random(in: 100...2500, using: &random)),
                gpu: Int64.random(in: 0...1, using: &random), priority: Int32.random(in: 0...3, using: &random))
            #expect(response.status == 200, "\(response.text)")
        }
        let database = try TestDatabase(stack.databaseURL)
        var preemptingRounds = 0
        for round in 0..<5 {
            let before = try database.clusterState(cluster)
            #expect(Scheduler.plan(for: before.snapshot) == SchedulingPlan(), "round \(round): not settled before")
            let lastEvent = try database.query("SELECT coalesce(max(id), 0) FROM deployment_events").int(0, 0) ?? 0
            let request = Resources(ram: 18, cpu: 1500, gpu: 1)
            let priority = Int32(10 + round)
            let placeholder: Int64 = -1
            let new = ActiveDeployment(
                id: placeholder, priority: priority, seq: before.nextSeq, request: request, isRunning: false)
            let plan = Scheduler.plan(for: before.snapshot.adding(new))
            if !plan.preempt.isEmpty { preemptingRounds += 1 }

            let response = try api.createDeployment(
                owner, name: "plan-preemptor-\(round)", cluster: cluster, ram: request.ram,
                cpu: JSONNumber.text(millicores: request.cpu), gpu: request.gpu, priority: priority)
            #expect(response.status == 200, "\(response.text)")
            let id = try #require(int(response.jsonObject?["id"]))
            #expect(
                response.jsonObject?["status"] as? String == (plan.start.contains(placeholder) ? "Running" : "Pending"))
            let after = try database.clusterState(cluster)
            #expect(after.nextSeq == before.nextSeq + 1)
            #expect(after.active.first { $0.id == id }?.seq == before.nextSeq)
            try expectExactly(
                plan.renaming(placeholder, to: id), created: new.renamed(to: id), before: before, after: after,
                eventsAfter: lastEvent, database, "round \(round)")
        }
        #expect(preemptingRounds >= 3, "the scenario should preempt in most rounds")
    }

    /// The shapes of `make bench`'s queue rows, which the one-statement paths decide (`createSwapping`,
    /// `completeAtQueueHead`), mixed with sizes that make them refuse (a swap that would leave room for someone
    /// waiting, a head that does not fit, a completion that admits several): every change must be exactly the
    /// reference's plan, whichever path the worker took. Repeated, so that every worker's hint has moved to those paths.
    @Test func swapsAndCompletionsAtTheQueueHeadApplyExactlyThePlan() throws {
        let owner = try api.register("sched-swap")
        let cluster = try api.createCluster(owner, name: "swap", ram: 12, cpu: "12", gpu: 1)
        let database = try TestDatabase(stack.databaseURL)
        var random = SchedulingRandom(seed: 0x5EED_0002)
        for index in 0..<12 {
            let response = try api.createDeployment(
                owner, name: "swap-fill-\(index)", cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 1)
            #expect(response.status == 200, "\(response.text)")
        }
        for index in 0..<3 {
            let response = try api.createDeployment(
                owner, name: "swap-big-\(index)", cluster: cluster, ram: 12, cpu: "12", gpu: 1, priority: 0)
            #expect(response.jsonObject?["status"] as? String == "Pending", "\(response.text)")
        }
        var outcomes: [String: Int] = [:]
        for round in 0..<60 {
            let before = try database.clusterState(cluster)
            let lastEvent = try database.query("SELECT coalesce(max(id), 0) FROM deployment_events").int(0, 0) ?? 0
            let running = before.active.filter(\.isRunning).sorted { $0.id < $1.id }
            if round % 2 == 1, let target = running.first {
                let plan = Scheduler.plan(for: before.snapshot.removing(target.id))
                let response = try api.complete(owner, target.id)
                #expect(response.status == 200, "\(response.text)")
                try expectExactly(
                    plan, completed: target, before: before, after: try database.clusterState(cluster),
                    eventsAfter: lastEvent, database, "round \(round): completing \(target.id)")
                outcomes["completion starting \(plan.start.count)", default: 0] += 1
                continue
            }
            // Mostly one slot at a priority above everything, as in the bench; sometimes smaller or bigger.
            let ram = Int64.random(in: 0..<5, using: &random) == 0 ? Int64.random(in: 1...3, using: &random) : 1
            let request = Resources(ram: ram, cpu: 1000, gpu: 0)
            let new = ActiveDeployment(
                id: -1, priority: Int32(10 + round), seq: before.nextSeq, request: request, isRunning: false)
            let plan = Scheduler.plan(for: before.snapshot.adding(new))
            let response = try api.createDeployment(
                owner, name: "swap-\(round)", cluster: cluster, ram: ram, cpu: "1", gpu: 0, priority: new.priority)
            #expect(response.status == 200, "\(response.text)")
            let id = try #require(int(response.jsonObject?["id"]))
            try expectExactly(
                plan.renaming(-1, to: id), created: new.renamed(to: id), before: before,
                after: try database.clusterState(cluster), eventsAfter: lastEvent, database, "round \(round)")
            outcomes["create starting \(plan.start.count), preempting \(plan.preempt.count)", default: 0] += 1
        }
        #expect((outcomes["create starting 1, preempting 1"] ?? 0) >= 15, "\(outcomes)")
        #expect((outcomes["completion starting 1"] ?? 0) >= 15, "\(outcomes)")
        #expect(outcomes.count >= 4, "the sizes should also make the one-statement paths refuse: \(outcomes)")
        try expectRedisMatches(cluster, database)
    }

    /// Expects `after` to be `before` with exactly `plan` and the change itself applied: `created` inserted (running
    /// when the plan starts it) or `completed` gone; the accounting, one version step, a settled cluster, and exactly
    /// the change's events after the event `lastEvent`.
    private func expectExactly(
        _ plan: SchedulingPlan, created: ActiveDeployment? = nil, completed: ActiveDeployment? = nil,
        before: ClusterState, after: ClusterState, eventsAfter lastEvent: Int64, _ database: TestDatabase,
        _ context: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let beforeStatus = Dictionary(uniqueKeysWithValues: before.active.map { ($0.id, $0.isRunning) })
        let afterStatus = Dictionary(uniqueKeysWithValues: after.active.map { ($0.id, $0.isRunning) })
        var active = Set(beforeStatus.keys)
        if let created { active.insert(created.id) }
        if let completed { active.remove(completed.id) }
        #expect(Set(afterStatus.keys) == active, "\(context): active set", sourceLocation: sourceLocation)
        let changed = Set(
            afterStatus.compactMap { id, running in beforeStatus[id].flatMap { $0 == running ? nil : id } })
        #expect(
            changed == Set(plan.start + plan.preempt).subtracting(created.map { [$0.id] } ?? []),
            "\(context): \(plan)", sourceLocation: sourceLocation)
        if let created {
            #expect(afterStatus[created.id] == plan.start.contains(created.id), sourceLocation: sourceLocation)
        }
        let requests = Dictionary(
            uniqueKeysWithValues: (before.active + (created.map { [$0] } ?? [])).map { ($0.id, $0.request) })
        let started = plan.start.map { requests[$0]! }.reduce(Resources(), +)
        let preempted = plan.preempt.map { requests[$0]! }.reduce(Resources(), +)
        #expect(
            after.available == before.available + (completed?.request ?? Resources()) - started + preempted,
            "\(context): accounting", sourceLocation: sourceLocation)
        #expect(after.available == after.capacity - after.runningSum, sourceLocation: sourceLocation)
        #expect(after.version == before.version + 1, sourceLocation: sourceLocation)
        #expect(
            Scheduler.plan(for: after.snapshot) == SchedulingPlan(), "\(context): not settled after",
            sourceLocation: sourceLocation)

        // Queued for a new deployment, Completed for a completed one, Started per start, Preempted naming its cause.
        let written = try database.query(
            "SELECT deployment_id, kind, caused_by FROM deployment_events WHERE id > $1 ORDER BY id",
            [String(lastEvent)])
        let actual = (0..<written.rowCount).map {
            "\(written.int($0, 0)!) \(written.string($0, 1)!) \(written.int($0, 2).map(String.init) ?? "-")"
        }
        var planned = created.map { ["\($0.id) Queued -"] } ?? completed.map { ["\($0.id) Completed -"] } ?? []
        planned += plan.start.map { "\($0) Started -" }
        planned += plan.preempt.map { "\($0) Preempted \(plan.preemptedBy[$0].map(String.init) ?? "-")" }
        #expect(actual.sorted() == planned.sorted(), "\(context): events", sourceLocation: sourceLocation)
    }

    // MARK: - Concurrency on one cluster

    @Test func eightConcurrentClientsLeaveTheClusterSettledAndConsistent() throws {
        let owner = try api.register("sched-load")
        let total = Resources(ram: 64, cpu: 16_000, gpu: 4)
        let cluster = try api.createCluster(owner, name: "load", ram: total.ram, cpu: "16", gpu: total.gpu)
        let shared = LoadLedger()
        let api = self.api
        let clients = 8
        let operations = 500
        let seed: UInt64 = 0x10AD_2024

        let url = stack.databaseURL
        let started = Date()
        runThreads(clients) { client in
            var random = SchedulingRandom(seed: seed &+ UInt64(client))
            // Each client reads the running set itself: a create's answer tells only its status at that moment, and
            // deployments the scheduler starts later (admitted by a completion, resumed after a preemption) are
            // completable too.
            let database: TestDatabase
            do {
                database = try TestDatabase(url)
            } catch {
                shared.fail("connect: \(error)")
                return
            }
            for operation in stride(from: client, to: operations, by: clients) {
                let running = try? database.query(
                    "SELECT id FROM deployments WHERE cluster_id = $1 AND status = 'Running' ORDER BY id",
                    [String(cluster)])
                let known = running.flatMap { rows in
                    rows.rowCount == 0 ? nil : rows.int(Int.random(in: 0..<rows.rowCount, using: &random), 0)
                }
                if let target = known, Int.random(in: 0..<10, using: &random) < 5 {
                    do {
                        let response = try api.complete(owner, target)
                        shared.recordCompletion(target, response)
                    } catch {
                        shared.fail("complete \(target): \(error)")
                    }
                    continue
                }
                let fits = Int.random(in: 0..<20, using: &random) != 0
                let ram = fits ? Int64.random(in: 1...24, using: &random) : Int64.random(in: 65...90, using: &random)
                let cpu = Int64.random(in: 50...6000, using: &random)
                let gpu = Int64.random(in: 0...2, using: &random)
                let priority = Int32.random(in: 0...5, using: &random)
                do {
                    let response = try api.createDeployment(
                        owner, name: "load-\(client)-\(operation)", cluster: cluster, ram: ram,
                        cpu: JSONNumber.text(millicores: cpu), gpu: gpu, priority: priority)
                    shared.recordCreate(fits: fits, response)
                } catch {
                    shared.fail("create: \(error)")
                }
            }
        }
        let elapsed = Date().timeIntervalSince(started)

        let report = shared.report()
        #expect(report.failures.isEmpty, "\(report.failures.prefix(10))")
        #expect(report.creates > 150 && report.completions > 25, "\(report)")
        #expect(report.refused > 0, "some creates should not fit")

        let database = try TestDatabase(stack.databaseURL)
        let state = try database.clusterState(cluster)
        #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan(), "the cluster is not settled")
        #expect(state.available == total - state.runningSum)
        #expect(state.available.fits(in: total) && Resources().fits(in: state.available))
        let rows = try database.query(
            "SELECT id, status, preemptions FROM deployments WHERE cluster_id = $1 ORDER BY id", [String(cluster)])
        #expect(rows.rowCount == report.creates)
        // Id and `seq` are both drawn under the cluster's lock, so they rise together: the cluster-filtered list
        // walks `seq` order and relies on it being id order.
        let outOfOrder = try database.query(
            """
            SELECT count(*) FROM (
                SELECT id, lag(id) OVER (ORDER BY seq) AS previous FROM deployments WHERE cluster_id = $1
            ) d WHERE previous > id
            """, [String(cluster)])
        #expect(outOfOrder.int(0, 0) == 0, "ids out of seq order under concurrent creates")
        var completedInDatabase: Set<Int64> = []
        let histories = try database.eventsByDeployment(cluster: cluster)
        for row in 0..<rows.rowCount {
            let id = rows.int(row, 0)!
            let status = rows.string(row, 1)!
            if status == "Completed" { completedInDatabase.insert(id) }
            let history = histories[id] ?? []
            let problem = historyProblem(history, finalStatus: status, preemptions: rows.int(row, 2)!)
            #expect(problem == nil, "deployment \(id) (\(status)): \(problem ?? "") in \(history)")
        }
        #expect(completedInDatabase == report.completedIDs, "each Completed deployment was completed by one 200")
        try expectRedisMatches(cluster, database)
        let rebuilds = stack.logText().split(separator: "\n").filter {
            $0.contains("queue snapshot rebuilt") && $0.contains("cluster_id=\(cluster) ")
        }.count
        print("SchedulingTests: \(rebuilds) full snapshot rebuilds of cluster \(cluster) with Redis up")
        print("SchedulingTests: 500 operations by 8 clients in \(String(format: "%.2f", elapsed)) s: \(report)")
    }

    // MARK: - Clusters do not block one another

    /// A worker that takes a create or a completion also takes the requests already waiting for a worker and makes the
    /// changes among them in one round trip (`ClusterScheduler.make`): the creates into one cluster in one transaction,
    /// each completion in its own. One worker and sixteen clients, each creating into a roomy cluster and a small one
    /// (where creates queue and completions admit) and completing what it created the round before: every change is
    /// answered exactly as alone (a duplicate name gets its `409`, the other twin its `200`; a completion `200` or,
    /// for one still pending, `409`, and PostgreSQL agrees), some transactions carried several creates (rows committed
    /// together share `xmin`), and both clusters are settled, with exact accounting, events and Redis snapshots.
    @Test func changesWaitingForAWorkerAreMadeTogetherAndAnsweredAsAlone() throws {
        let single = try Stack.started(environment: ["HV_WORKERS": "1"]).get()
        defer { single.stop() }
        let api = SchedulingAPI(client: single.client)
        let owner = try api.register("sched-together")
        let roomy = try api.createCluster(owner, name: "roomy", ram: 1_000, cpu: "1000", gpu: 0)
        let small = try api.createCluster(owner, name: "small", ram: 6, cpu: "6", gpu: 0)
        let clients = 16
        let rounds = 6
        let statuses = LockedStatuses()
        runThreads(clients) { client in
            var created: [Int64] = []
            for round in 0..<rounds {
                // Clients 0 and 1 create the same name in their first round.
                let name = client < 2 && round == 0 ? "twin" : "d-\(client)-\(round)"
                for cluster in [roomy, small] {
                    let response = try? api.createDeployment(
                        owner, name: cluster == roomy ? name : "s-\(client)-\(round)", cluster: cluster, ram: 1,
                        cpu: "1", gpu: 0, priority: Int32(client % 3))
                    statuses.add(cluster == roomy ? name : "small", response?.status ?? 0)
                    if let id = int(response?.jsonObject?["id"]) { created.append(id) }
                }
                if round > 0 {
                    for id in created.prefix(2) {
                        statuses.add("complete \(id)", (try? api.complete(owner, id))?.status ?? 0)
                    }
                    created.removeFirst(min(2, created.count))
                }
            }
        }
        let seen = statuses.all
        #expect(seen.filter { $0.name == "twin" }.map(\.status).sorted() == [200, 409])
        let creates = seen.filter { !$0.name.hasPrefix("complete ") && $0.name != "twin" }
        #expect(creates.count == 2 * clients * rounds - 2 && creates.allSatisfy { $0.status == 200 })
        let completions = seen.filter { $0.name.hasPrefix("complete ") }
        #expect(!completions.isEmpty && completions.allSatisfy { [200, 409].contains($0.status) }, "\(completions)")

        let database = try TestDatabase(single.databaseURL)
        for completion in completions {
            let id = completion.name.dropFirst("complete ".count)
            let status = try database.query("SELECT status FROM deployments WHERE id = $1", [String(id)])
            #expect((status.string(0, 0) == "Completed") == (completion.status == 200), "\(completion)")
        }
        let rows = try database.query(
            "SELECT count(*), count(DISTINCT xmin::text) FROM deployments WHERE cluster_id = $1 AND status = 'Running'",
            [String(roomy)])
        #expect((rows.int(0, 1) ?? 0) < (rows.int(0, 0) ?? 0), "no transaction carried more than one create")
        for cluster in [roomy, small] {
            let state = try database.clusterState(cluster)
            #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan(), "cluster \(cluster) is not settled")
            #expect(state.available == state.capacity - state.runningSum)
            try SchedulingTests(stack: single).expectRedisMatches(cluster, database)
        }
        let events = try database.query(
            "SELECT count(*) FILTER (WHERE e.kind = 'Queued'), count(*) FILTER (WHERE e.kind = 'Completed')"
                + " FROM deployment_events e JOIN deployments d ON d.id = e.deployment_id WHERE d.cluster_id = $1",
            [String(roomy)])
        #expect(events.int(0, 0) == Int64(clients * rounds - 1), "each create has its Queued event")
        let completedInRoomy = try database.query(
            "SELECT count(*) FROM deployments WHERE cluster_id = $1 AND status = 'Completed'", [String(roomy)])
        #expect(events.int(0, 1) == completedInRoomy.int(0, 0), "each completion has its Completed event")
    }

    /// Creates that a batch makes in one statement (`createAll`) are decided as if they came one after another, into a
    /// cluster where `base` (priority 2) runs: the first fits, the second does not fit in what the first left and
    /// waits, the third fits in what is left, the fourth's caller is of another tenant (404, made alone), and the
    /// fifth must preempt, and the lowest-ordered running deployment below it is not `base` but a create started in
    /// the walk, which the statement leaves to the general path: made alone after the batch, it preempts the first.
    /// The first three share a transaction; `seq`, versions, events, accounting and snapshot are exact.
    @Test func createsMadeInOneStatementAreDecidedAsOneAfterAnother() throws {
        let owner = try api.register("sched-fused")
        let stranger = try api.register("sched-fused-stranger")
        let cluster = try api.createCluster(owner, name: "fused", ram: 10, cpu: "10", gpu: 0)
        let scheduler = stack.scheduler()
        let now = Int64(Date().timeIntervalSince1970)
        func create(_ name: String, ram: Int64, priority: Int32 = 1, by account: Account) -> ClusterScheduler.Change {
            let new = ClusterScheduler.NewDeployment(
                name: name, imagePath: "registry.example.com/team/app:1.0",
                request: Resources(ram: ram, cpu: 1000, gpu: 0), priority: priority)
            return .create(new, in: cluster, by: Caller(id: account.id, issuedAt: now))
        }
        let base = try scheduler.make([create("base", ram: 4, priority: 2, by: owner)])
        #expect((try base[0].get()).status == "Running")
        let made = try scheduler.make([
            create("first", ram: 4, by: owner), create(#"second "2" \ {x,y}"#, ram: 8, by: owner),
            create("third", ram: 2, by: owner), create("fourth", ram: 1, by: stranger),
            create("fifth", ram: 4, priority: 5, by: owner),
        ])
        #expect(made.map { (try? $0.get())?.status } == ["Running", "Pending", "Running", nil, "Running"])
        #expect(throws: HTTPError(404, "Cluster not found")) { try made[3].get() }

        let database = try TestDatabase(stack.databaseURL)
        let rows = try database.query(
            """
            SELECT d.name, d.seq, e.xmin::text FROM deployments d
            JOIN deployment_events e ON e.deployment_id = d.id AND e.kind = 'Queued'
            WHERE d.cluster_id = $1 ORDER BY d.seq
            """, [String(cluster)])
        #expect(
            (0..<rows.rowCount).map { rows.string($0, 0) ?? "" } == [
                "base", "first", #"second "2" \ {x,y}"#, "third", "fifth",
            ])
        #expect((0..<rows.rowCount).map { rows.int($0, 1) ?? 0 } == [1, 2, 3, 4, 5])
        let transactions = (0..<rows.rowCount).map { rows.string($0, 2) ?? "" }
        #expect(Set(transactions[1...3]).count == 1 && !transactions[1...3].contains(transactions[4]))
        let state = try database.clusterState(cluster)
        #expect(state.available == Resources(ram: 0, cpu: 7000, gpu: 0))
        #expect(state.version == 5 && state.nextSeq == 6)
        #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan())
        let ids = Dictionary(uniqueKeysWithValues: (base + made).compactMap { try? $0.get() }.map { ($0.name, $0.id) })
        let fifth = try #require(ids["fifth"])
        let started = [DeploymentEvent(kind: "Queued"), DeploymentEvent(kind: "Started")]
        let events = try database.eventsByDeployment(cluster: cluster)
        #expect(events[try #require(ids["base"])] == started)
        #expect(events[try #require(ids["first"])] == started + [DeploymentEvent(kind: "Preempted", causedBy: fifth)])
        #expect(events[try #require(ids[#"second "2" \ {x,y}"#])] == [DeploymentEvent(kind: "Queued")])
        #expect(events[try #require(ids["third"])] == started)
        #expect(events[fifth] == started)
        try expectRedisMatches(cluster, database)
    }

    /// Random batches of creates and completions over two small clusters, made directly by `ClusterScheduler.make`
    /// (so each whole batch reaches the batch statements, `createAll` and `completeAll`, whose walks carry what each
    /// change leaves to the next, besides the changes they leave to the general path): replaying the changes made, in
    /// the order of the events they wrote, through the reference plan from the state before the batch gives exactly
    /// the state after it, with each create answered as the reference decided it and given the next `seq` in that
    /// order, and every refused change refused with the answer it gets alone.
    @Test func randomBatchesAreDecidedAsTheirChangesOneAfterAnother() throws {
        let owner = try api.register("sched-batches")
        let clusters = [
            try api.createCluster(owner, name: "b0", ram: 10, cpu: "8", gpu: 2),
            try api.createCluster(owner, name: "b1", ram: 6, cpu: "6", gpu: 1),
        ]
        let scheduler = stack.scheduler()
        let database = try TestDatabase(stack.databaseURL)
        let caller = Caller(id: owner.id, issuedAt: Int64(Date().timeIntervalSince1970))
        var random = SchedulingRandom(seed: 0x5EED_0003)
        var finished: [Int64] = []
        var outcomes: [String: Int] = [:]
        var sharedTransactions = 0
        for round in 0..<120 {
            let before = try clusters.map { try database.clusterState($0) }
            let lastEvent = try database.query("SELECT coalesce(max(id), 0) FROM deployment_events").int(0, 0) ?? 0
            // Completions mostly of running deployments, some of pending or finished ones (409).
            let running = before.flatMap(\.active).filter(\.isRunning).map(\.id)
            let others = before.flatMap(\.active).filter { !$0.isRunning }.map(\.id) + finished.suffix(3)
            let changes = (0..<Int.random(in: 1...8, using: &random)).map { index -> ClusterScheduler.Change in
                let dice = Int.random(in: 0..<10, using: &random)
                if dice < 5, let target = running.randomElement(using: &random) { return .complete(target, by: caller) }
                if dice == 5, let target = others.randomElement(using: &random) { return .complete(target, by: caller) }
                let request = Resources(
                    ram: .random(in: 0...5, using: &random), cpu: 1000 * .random(in: 0...4, using: &random),
                    gpu: .random(in: 0...1, using: &random))
                let new = ClusterScheduler.NewDeployment(
                    name: "r\(round)-\(index)", imagePath: "registry.example.com/team/app:1.0",
                    request: Int.random(in: 0..<30, using: &random) == 0 ? Resources(ram: 11, cpu: 0, gpu: 0) : request,
                    priority: .random(in: 0...3, using: &random))
                return .create(new, in: clusters.randomElement(using: &random)!, by: caller)
            }
            let made = try scheduler.make(changes)
            // Each change made wrote one first event (`Queued` for a create, `Completed` for a completion).
            let written = try database.query(
                """
                SELECT deployment_id, kind::text, id, xmin::text FROM deployment_events
                WHERE id > $1 AND kind IN ('Queued', 'Completed') ORDER BY id
                """, [String(lastEvent)])
            var order: [(event: Int64, transaction: String, change: Int)] = []
            for row in 0..<written.rowCount {
                let deployment = written.int(row, 0)!
                let index = changes.indices.first { index in
                    switch (changes[index], made[index]) {
                    case (.create, .success(let created)):
                        written.string(row, 1) == "Queued" && created.id == deployment
                    case (.complete(let id, _), .success): written.string(row, 1) == "Completed" && id == deployment
                    default: false
                    }
                }
                let change = try #require(index, "round \(round): an event of no change made")
                order.append((written.int(row, 2)!, written.string(row, 3)!, change))
            }
            #expect(order.count == made.filter { (try? $0.get()) != nil }.count, "round \(round)")
            sharedTransactions += Dictionary(grouping: order, by: \.transaction).values.filter { $0.count > 1 }
                .map(\.count).reduce(0, +)
            // The reference, change after change in that order.
            var expected = Dictionary(uniqueKeysWithValues: zip(clusters, before.map(\.snapshot)))
            var nextSeq = Dictionary(uniqueKeysWithValues: zip(clusters, before.map(\.nextSeq)))
            for (_, _, index) in order {
                let row = try made[index].get()
                var snapshot = try #require(expected[row.clusterID])
                let plan: SchedulingPlan
                switch changes[index] {
                case .create(let new, _, _):
                    let seq = try #require(nextSeq[row.clusterID])
                    nextSeq[row.clusterID] = seq + 1
                    let stored = try database.query("SELECT seq FROM deployments WHERE id = $1", [String(row.id)])
                    #expect(stored.int(0, 0) == seq, "round \(round): \(new.name)'s seq")
                    let deployment = ActiveDeployment(
                        id: row.id, priority: new.priority, seq: seq, request: new.request, isRunning: false)
                    snapshot = snapshot.adding(deployment)
                    plan = Scheduler.plan(for: snapshot)
                    #expect(
                        row.status == (plan.start.contains(row.id) ? "Running" : "Pending"),
                        "round \(round): \(new.name)")
                    outcomes["create starting \(plan.start.count), preempting \(plan.preempt.count)", default: 0] += 1
                case .complete(let id, _):
                    #expect(snapshot.active.first { $0.id == id }?.isRunning == true, "round \(round): \(id)")
                    snapshot = snapshot.removing(id)
                    plan = Scheduler.plan(for: snapshot)
                    finished.append(id)
                    outcomes["completion starting \(plan.start.count)", default: 0] += 1
                }
                for position in snapshot.active.indices {
                    let id = snapshot.active[position].id
                    if plan.start.contains(id) { snapshot.active[position].isRunning = true }
                    if plan.preempt.contains(id) { snapshot.active[position].isRunning = false }
                }
                expected[row.clusterID] = snapshot
            }
            for (cluster, state) in zip(clusters, before) {
                let after = try database.clusterState(cluster)
                let reference = try #require(expected[cluster])
                #expect(
                    Set(after.active.map { "\($0.id) \($0.isRunning)" })
                        == Set(reference.active.map { "\($0.id) \($0.isRunning)" }),
                    "round \(round): cluster \(cluster)")
                #expect(after.available == after.capacity - after.runningSum, "round \(round)")
                #expect(try database.outsideScanStarts(cluster) == [], "round \(round)")
                let changed = order.filter { (try? made[$0.change].get())?.clusterID == cluster }.count
                #expect(after.version == state.version + Int64(changed), "round \(round)")
            }
            for (change, result) in zip(changes, made) {
                guard case .failure(let error) = result else { continue }
                switch change {
                case .create:
                    #expect(
                        error as? HTTPError == HTTPError(422, "Not Enough Resources on the cluster for this deployment")
                    )
                case .complete: #expect((error as? HTTPError)?.status == 409, "round \(round): \(error)")
                }
            }
        }
        for cluster in clusters { try expectRedisMatches(cluster, database) }
        // The look-ups' starts moved from their defaults (which take in everything).
        let starts = try database.query(
            """
            SELECT count(*) FROM clusters WHERE id = ANY($1::bigint[])
              AND running_from_priority > -2147483648 AND pending_from_priority < 2147483647
            """, ["{\(clusters.map(String.init).joined(separator: ","))}"])
        #expect(starts.int(0, 0) == Int64(clusters.count))
        // Batches of up to 8 changes over two clusters: most changes share a transaction, and every case comes up.
        let changes = outcomes.values.reduce(0, +)
        #expect(sharedTransactions * 2 > changes, "\(sharedTransactions) of \(changes)")
        for outcome in [
            "create starting 1, preempting 0", "create starting 0, preempting 0",
            "create starting 1, preempting 1", "completion starting 0", "completion starting 1",
        ] {
            #expect((outcomes[outcome] ?? 0) >= 10, "\(outcome): \(outcomes)")
        }
    }

    /// Batches lock all their clusters before their first change, in ascending order, so batches of several workers
    /// over the same clusters wait for each other but never deadlock (PostgreSQL would abort one after a second and
    /// log it; with the locks in random order this test sees several). Four workers, three clusters, and clients that
    /// each change two clusters per round, in either order, and complete what they created the round before: every
    /// change answers 200, PostgreSQL logs no deadlock, and every cluster is settled with exact accounting.
    @Test func batchesOverSeveralClustersNeverDeadlock() throws {
        let pool = try Stack.started(environment: ["HV_WORKERS": "4"]).get()
        defer { pool.stop() }
        let api = SchedulingAPI(client: pool.client)
        let owner = try api.register("sched-deadlock")
        let clusters = try (0..<3).map { try api.createCluster(owner, name: "c\($0)", ram: 1_000, cpu: "1000", gpu: 0) }
        let statuses = LockedStatuses()
        runThreads(24) { client in
            var created: [Int64] = []
            for round in 0..<8 {
                let first = (client + round) % 3
                for cluster in [clusters[first], clusters[(first + 1 + client % 2) % 3]] {
                    let response = try? api.createDeployment(
                        owner, name: "d-\(client)-\(round)-\(cluster)", cluster: cluster, ram: 1, cpu: "1", gpu: 0,
                        priority: 1)
                    statuses.add("create", response?.status ?? 0)
                    if let id = int(response?.jsonObject?["id"]) { created.append(id) }
                }
                for id in created.dropLast(2) { statuses.add("complete", (try? api.complete(owner, id))?.status ?? 0) }
                created.removeFirst(max(0, created.count - 2))
            }
        }
        let seen = statuses.all
        #expect(seen.count == 24 * 8 * 2 + 24 * 7 * 2)
        #expect(seen.allSatisfy { $0.status == 200 }, "\(seen.filter { $0.status != 200 })")
        let postgresLog = try String(contentsOfFile: pool.stateDir + "/log/postgres.log", encoding: .utf8)
        let deadlocked = postgresLog.contains("deadlock detected")
        #expect(!deadlocked, "PostgreSQL detected a deadlock")
        let database = try TestDatabase(pool.databaseURL)
        for cluster in clusters {
            let state = try database.clusterState(cluster)
            #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan(), "cluster \(cluster) is not settled")
            #expect(state.available == state.capacity - state.runningSum)
            try SchedulingTests(stack: pool).expectRedisMatches(cluster, database)
        }
    }

    @Test func aLockedClusterDoesNotDelayAnotherCluster() throws {
        let owner = try api.register("sched-locks")
        let clusterA = try api.createCluster(owner, name: "locked", ram: 100, cpu: "100", gpu: 0)
        let clusterB = try api.createCluster(owner, name: "free", ram: 100, cpu: "100", gpu: 0)
        let api = self.api
        let holder = try TestDatabase(stack.databaseURL)
        let blocked = try Outcome.heldUp(api, owner, name: "on-locked", on: clusterA, by: holder)

        let timings = TimingLedger()
        runThreads(3) { client in
            for index in 0..<4 {
                let start = Date()
                do {
                    let response = try api.createDeployment(
                        owner, name: "on-free-\(client)-\(index)", cluster: clusterB, ram: 1, cpu: "1", gpu: 0,
                        priority: Int32(index))
                    timings.add(Date().timeIntervalSince(start), response.status)
                } catch {
                    timings.add(.infinity, -1)
                }
            }
        }
        let observed = timings.all()
        #expect(observed.count == 12)
        #expect(observed.allSatisfy { $0.status == 200 }, "\(observed)")
        #expect(observed.map(\.seconds).max() ?? .infinity < 1.0, "creates on B waited: \(observed.map(\.seconds))")
        #expect(blocked.value == nil, "the create on A finished while A was locked")

        let releasedAt = Date()
        try holder.releaseLock(of: clusterA)
        #expect(waitUntil(timeout: 5) { blocked.value != nil })
        let finishedAfter = Date().timeIntervalSince(releasedAt)
        blocked.expectRunning()
        #expect(finishedAfter < 1.0)
        let stateA = try holder.clusterState(clusterA)
        #expect(stateA.active.count == 1 && stateA.available.ram == 99)
    }

    /// With one worker of two accepting at a time (`AcceptGate`), a create held up on a cluster's lock keeps the place
    /// until it is made; the other worker waits for it only `AcceptGate.patienceMilliseconds` and then answers.
    @Test func aChangeHeldUpOnALockDoesNotHoldUpTheWorkerWaitingForItsPlace() throws {
        let pool = try Stack.started(environment: ["HV_WORKERS": "2", "HV_ACCEPTING_WORKERS": "1"]).get()
        defer { pool.stop() }
        let api = SchedulingAPI(client: pool.client)
        let owner = try api.register("sched-gate")
        let cluster = try api.createCluster(owner, name: "held", ram: 100, cpu: "100", gpu: 0)
        let holder = try TestDatabase(pool.databaseURL)
        let blocked = try Outcome.heldUp(api, owner, name: "held", on: cluster, by: holder)

        for _ in 0..<5 {
            let start = Date()
            let response = try pool.client.get("/healthz")
            #expect(response.status == 200)
            #expect(Date().timeIntervalSince(start) < 1.0, "waited for the held-up worker's place")
        }
        #expect(blocked.value == nil, "the create finished while its cluster was locked")

        try holder.releaseLock(of: cluster)
        #expect(waitUntil(timeout: 5) { blocked.value != nil })
        blocked.expectRunning()
    }

    // MARK: - Redis

    @Test func requestsSucceedWhileRedisIsDownAndTheSnapshotIsRebuiltAfterwards() throws {
        let owner = try api.register("sched-redis")
        let cluster = try api.createCluster(owner, name: "redis", ram: 10, cpu: "10", gpu: 1)
        let database = try TestDatabase(stack.databaseURL)
        func deploy(_ name: String, _ priority: Int32, ram: Int64, gpu: Int64 = 0) throws -> Int64 {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: ram, cpu: "1", gpu: gpu, priority: priority)
            #expect(response.status == 200, "\(name): \(response.text)")
            return int(response.jsonObject?["id"]) ?? 0
        }
        let first = try deploy("redis-1", 1, ram: 6)
        _ = try deploy("redis-2", 1, ram: 6)
        try expectRedisMatches(cluster, database)

        try stack.stopRedis()
        var redisStopped = true
        defer { if redisStopped { try? stack.startRedis() } }
        let preemptor = try deploy("redis-3", 5, ram: 5, gpu: 1)
        _ = try deploy("redis-4", 0, ram: 1)
        _ = try deploy("redis-5", 9, ram: 1)
        let completed = try api.complete(owner, preemptor)
        #expect(completed.status == 200, "\(completed.text)")
        let completedFirst = try api.complete(owner, first)
        #expect(completedFirst.status == 200, "\(completedFirst.text)")
        let lookup = try api.get("/deployments/get_deployment/?id=\(first)", owner)
        #expect(lookup.status == 200)
        // So does every v1 read: what would come from the snapshot is counted in PostgreSQL.
        let waiting = try database.clusterState(cluster).active.first { !$0.isRunning }
        for path in ["/v1/deployments/\(first)", "/v1/deployments/\(waiting?.id ?? first)", "/v1/clusters/\(cluster)"] {
            let response = try api.get(path, owner)
            #expect(response.status == 200, "\(path): \(response.text)")
        }
        if let waiting {
            let object = try api.getJSON("/v1/deployments/\(waiting.id)", owner)
            #expect(int(object["queue_position"]) != nil && object["pending_reason"] is String, "\(object)")
        }
        let whatIf = try api.postJSON(
            "/v1/clusters/\(cluster)/what-if", owner,
            #"{"ram_required":10,"cpu_required":1,"gpu_required":1,"priority":0}"#)
        #expect(whatIf.status == 200, "\(whatIf.text)")
        // The queue view comes from PostgreSQL while Redis is down, in the same order and shape.
        let queue = try api.getJSON("/v1/clusters/\(cluster)/queue?limit=1000", owner)
        let order = try database.clusterState(cluster).active.sorted { $0.schedulesBefore($1) }
        #expect((queue["deployments"] as? [[String: Any]])?.map { int($0["id"]) ?? 0 } == order.map(\.id), "\(queue)")
        #expect(int(queue["version"]) == (try database.clusterState(cluster).version))

        try stack.startRedis()
        redisStopped = false
        // Each worker retries a lost Redis connection at most once a second.
        usleep(1_200_000)
        _ = try deploy("redis-6", 0, ram: 1)
        try expectRedisMatches(cluster, database)
    }

    @Test func aSnapshotLeftBehindALostChangeIsRebuiltOnceTheLossIsEvident() throws {
        let owner = try api.register("sched-lost")
        let cluster = try api.createCluster(owner, name: "lost", ram: 10, cpu: "10", gpu: 0)
        let database = try TestDatabase(stack.databaseURL)
        func deploy(_ name: String) throws {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 1)
            #expect(response.status == 200, "\(name): \(response.text)")
        }
        try deploy("lost-1")
        try expectRedisMatches(cluster, database)
        let published = try database.clusterState(cluster).version
        // A committed change whose publish never reached Redis (its worker died, or Redis failed it).
        try database.query("UPDATE clusters SET version = version + 1 WHERE id = $1", [String(cluster)])

        try deploy("lost-2")  // arrives ahead of the lost change: waits, and the request does not
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        #expect(try readSnapshot(cluster, redis).version == published)
        usleep(UInt32(DeploymentQueue.lostAfterMilliseconds + 200) * 1000)
        try deploy("lost-3")  // the snapshot has been behind too long: rebuilt from PostgreSQL
        try expectRedisMatches(cluster, database)
    }

    @Test func anOlderSnapshotWriteNeverReplacesANewerOne() throws {
        let owner = try api.register("sched-versions")
        let cluster = try api.createCluster(owner, name: "versions", ram: 10, cpu: "10", gpu: 0)
        for (index, ram) in [4, 4, 4].enumerated() {
            let response = try api.createDeployment(
                owner, name: "versions-\(index)", cluster: cluster, ram: Int64(ram), cpu: "1", gpu: 0, priority: 1)
            #expect(response.status == 200)
        }
        let database = try TestDatabase(stack.databaseURL)
        try expectRedisMatches(cluster, database)
        let state = try database.clusterState(cluster)
        let version = state.version

        let log = Log(path: nil, level: .error, role: "test")
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        let queue = DeploymentQueue(redis: redis, log: log)
        let service = Database(url: stack.databaseURL, log: log)
        let running = state.active.filter(\.isRunning)
        let pending = state.active.filter { !$0.isRunning }

        // Version N (one past PostgreSQL's): a fake pending deployment joins the queue.
        let newer = ActiveDeployment(
            id: 9_000_001, priority: 2, seq: 900, request: Resources(ram: 1, cpu: 1, gpu: 0), isRunning: false)
        var change = DeploymentQueue.Change(
            cluster: cluster, version: version + 1, available: Resources(ram: 1, cpu: 7000, gpu: 0))
        change.addedPending = [newer]
        queue.publish([change], rebuildFrom: service)
        let expected = RedisSnapshot(
            version: version + 1, available: Resources(ram: 1, cpu: 7000, gpu: 0),
            running: Set(running.map(DeploymentQueue.member)),
            pending: Set((pending + [newer]).map(DeploymentQueue.member)))
        #expect(try readSnapshot(cluster, redis) == expected)

        // Version N − 1, arriving late, changes nothing.
        let older = ActiveDeployment(
            id: 9_000_002, priority: 3, seq: 901, request: Resources(ram: 2, cpu: 1, gpu: 0), isRunning: true)
        var late = DeploymentQueue.Change(cluster: cluster, version: version, available: Resources())
        late.removedRunning = running
        late.addedRunning = [older]
        late.removedPending = pending
        queue.publish([late], rebuildFrom: service)
        #expect(try readSnapshot(cluster, redis) == expected)

        // Neither does a full rebuild from PostgreSQL (still at N − 1), nor a later change whose gap triggers one.
        try queue.rebuild(cluster, from: service)
        #expect(try readSnapshot(cluster, redis) == expected)
        var gap = DeploymentQueue.Change(cluster: cluster, version: version + 3, available: Resources())
        gap.removedPending = pending
        queue.publish([gap], rebuildFrom: service)
        #expect(try readSnapshot(cluster, redis) == expected)
        let staged = try redis.command([
            "EXISTS", "hv:q:\(cluster):running:staged", "hv:q:\(cluster):pending:staged",
        ])
        #expect(staged == .integer(0), "staged keys left behind")
    }

    @Test func changesArrivingOutOfOrderAreBufferedAndAppliedInOrder() throws {
        // A cluster id PostgreSQL does not have: a rebuild (if one were triggered) would find nothing to write.
        let cluster: Int64 = 8_000_000 + Int64(getpid() % 1000)
        let log = Log(path: nil, level: .error, role: "test")
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        _ = try redis.command(["DEL"] + DeploymentQueue.keys(cluster))
        let queue = DeploymentQueue(redis: redis, log: log)
        let service = Database(url: stack.databaseURL, log: log)
        func deployment(_ id: Int64, running: Bool) -> ActiveDeployment {
            ActiveDeployment(
                id: id, priority: 1, seq: id, request: Resources(ram: id, cpu: 0, gpu: 0), isRunning: running)
        }
        var first = DeploymentQueue.Change(cluster: cluster, version: 1, available: Resources(ram: 9))
        first.addedRunning = [deployment(1, running: true)]
        var second = DeploymentQueue.Change(cluster: cluster, version: 2, available: Resources(ram: 7))
        second.addedRunning = [deployment(2, running: true)]
        var third = DeploymentQueue.Change(cluster: cluster, version: 3, available: Resources(ram: 7))
        third.addedPending = [deployment(3, running: false)]

        queue.publish([first], rebuildFrom: service)
        queue.publish([third], rebuildFrom: service)  // ahead of its predecessor: waits in Redis
        #expect(try readSnapshot(cluster, redis).version == 1)
        /// The snapshot shows `version`, `ram` available, and the deployments `running` and `pending`.
        func expectSnapshot(
            _ version: Int64, ram: Int64, running: [Int64], pending: [Int64],
            sourceLocation: SourceLocation = #_sourceLocation
        ) throws {
            let snapshot = try readSnapshot(cluster, redis)
            #expect(snapshot.version == version, sourceLocation: sourceLocation)
            #expect(snapshot.available == Resources(ram: ram), sourceLocation: sourceLocation)
            #expect(
                snapshot.running == Set(running.map { DeploymentQueue.member(deployment($0, running: true)) }),
                sourceLocation: sourceLocation)
            #expect(
                snapshot.pending == Set(pending.map { DeploymentQueue.member(deployment($0, running: false)) }),
                sourceLocation: sourceLocation)
        }
        queue.publish([second], rebuildFrom: service)  // fills the gap; the buffered third follows
        try expectSnapshot(3, ram: 7, running: [1, 2], pending: [3])
        #expect(try redis.command(["HLEN", DeploymentQueue.keys(cluster)[3]]) == .integer(0))

        // Several changes in one round trip, out of order, just after Redis forgot its scripts (as after a restart).
        var fourth = DeploymentQueue.Change(cluster: cluster, version: 4, available: Resources(ram: 4))
        fourth.removedPending = [deployment(3, running: false)]
        fourth.addedRunning = [deployment(3, running: true)]
        var fifth = DeploymentQueue.Change(cluster: cluster, version: 5, available: Resources(ram: 5))
        fifth.removedRunning = [deployment(2, running: true)]
        _ = try redis.command(["SCRIPT", "FLUSH"])
        queue.publish([fifth, fourth], rebuildFrom: service)
        try expectSnapshot(5, ram: 5, running: [1, 3], pending: [])
        _ = try redis.command(["DEL"] + DeploymentQueue.keys(cluster))
    }

    @Test func concurrentRebuildsOfOneClusterLeaveTheWholeSnapshot() throws {
        let owner = try api.register("sched-rebuilds")
        let cluster = try api.createCluster(owner, name: "rebuilds", ram: 100, cpu: "100", gpu: 0)
        for index in 0..<60 {
            let response = try api.createDeployment(
                owner, name: "rebuilds-\(index)", cluster: cluster, ram: Int64(1 + index % 7), cpu: "0.5", gpu: 0,
                priority: Int32(index % 4))
            #expect(response.status == 200)
        }
        let database = try TestDatabase(stack.databaseURL)
        try expectRedisMatches(cluster, database)
        let url = stack.databaseURL
        let socket = stack.redisHost
        let keys = DeploymentQueue.keys(cluster)
        let redis = RedisConnection(endpoint: .unix(path: socket), database: 0)
        let failures = TimingLedger()
        var broken = 0
        var example = ""
        for round in 0..<40 {
            // Redis lost the snapshot (e.g. it restarted); several workers notice at once and rebuild it.
            _ = try redis.command(["DEL"] + keys)
            let start = DispatchSemaphore(value: 0)
            let group = DispatchGroup()
            for _ in 0..<6 {
                group.enter()
                Thread {
                    let log = Log(path: nil, level: .error, role: "test")
                    let queue = DeploymentQueue(
                        redis: RedisConnection(endpoint: .unix(path: socket), database: 0), log: log)
                    let service = Database(url: url, log: log)
                    // Connected beforehand, so that the rebuilds run together.
                    _ = try? service.run { _ in () }
                    _ = queue.redis.ping()
                    start.wait()
                    do { try queue.rebuild(cluster, from: service) } catch { failures.add(Double(round), -1) }
                    group.leave()
                }.start()
            }
            usleep(50_000)
            for _ in 0..<6 { start.signal() }
            group.wait()
            let state = try database.clusterState(cluster)
            let snapshot = try readSnapshot(cluster, redis)
            if snapshot.running.count != state.active.filter(\.isRunning).count
                || snapshot.pending.count != state.active.filter({ !$0.isRunning }).count
            {
                if broken == 0 {
                    example =
                        "round \(round): Redis has \(snapshot.running.count) running and \(snapshot.pending.count) pending "
                        + "at version \(snapshot.version ?? -1); PostgreSQL has \(state.active.filter(\.isRunning).count) "
                        + "and \(state.active.filter { !$0.isRunning }.count) at version \(state.version)"
                }
                broken += 1
            }
        }
        #expect(failures.all().isEmpty)
        #expect(broken == 0, "\(broken) of 40 rounds of concurrent rebuilds left a partial snapshot, e.g. \(example)")
        try expectRedisMatches(cluster, database)
    }

    // MARK: - Checks

    /// Expects the Redis snapshot of `cluster` to equal PostgreSQL's state.
    func expectRedisMatches(
        _ cluster: Int64, _ database: TestDatabase, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let state = try database.clusterState(cluster)
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        let snapshot = try readSnapshot(cluster, redis)
        let expected = RedisSnapshot(
            version: state.version, available: state.available,
            running: Set(state.active.filter(\.isRunning).map(DeploymentQueue.member)),
            pending: Set(state.active.filter { !$0.isRunning }.map(DeploymentQueue.member)))
        let log = stack.logText().split(separator: "\n").filter { $0.contains("snapshot") }.suffix(12)
        #expect(
            snapshot == expected, "Redis snapshot of cluster \(cluster); log:\n\(log.joined(separator: "\n"))",
            sourceLocation: sourceLocation)
    }

    private func expectAvailable(
        _ account: Account, _ cluster: Int64, ram: Int64, cpu: Double, gpu: Int64,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let object = try api.getJSON("/clusters/get_cluster/?id=\(cluster)", account)
        #expect(int(object["available_ram"]) == ram, "\(object)", sourceLocation: sourceLocation)
        #expect((object["available_cpu"] as? NSNumber)?.doubleValue == cpu, "\(object)", sourceLocation: sourceLocation)
        #expect(int(object["available_gpu"]) == gpu, "\(object)", sourceLocation: sourceLocation)
    }
}

// MARK: - HTTP helpers

struct Account: Sendable {
    let id: Int64
    let token: String
}

struct SchedulingFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The seed API calls these tests make, over `HTTPClient`. JSON bodies are written as text so numbers go out
/// exactly as given (`"0.125"` CPUs, not a binary float).
struct SchedulingAPI: Sendable {
    let client: HTTPClient

    func register(_ username: String) throws -> Account {
        let credentials = #"{"username":"\#(username)","password":"scheduling-password"}"#
        let registered = try send("POST", "/users/register/", nil, credentials)
        guard registered.status == 200, let id = int(registered.jsonObject?["id"]) else {
            throw SchedulingFailure("register \(username): \(registered.status) \(registered.text)")
        }
        let login = try send("POST", "/users/login/", nil, credentials)
        guard login.status == 200, let token = login.jsonObject?["access_token"] as? String else {
            throw SchedulingFailure("login \(username): \(login.status) \(login.text)")
        }
        return Account(id: id, token: token)
    }

    func createCluster(_ account: Account, name: String, ram: Int64, cpu: String, gpu: Int64) throws -> Int64 {
        let response = try postJSON(
            "/clusters/create/", account,
            #"{"name":"\#(name)","total_ram":\#(ram),"total_cpu":\#(cpu),"total_gpu":\#(gpu)}"#)
        guard response.status == 200, let id = int(response.jsonObject?["id"]) else {
            throw SchedulingFailure("create cluster \(name): \(response.status) \(response.text)")
        }
        return id
    }

    func createDeployment(
        _ account: Account, name: String, cluster: Int64, image: String = "registry.example.com/team/app:1.0",
        ram: Int64, cpu: String, gpu: Int64, priority: Int32
    ) throws -> HTTPResponse {
        try createDeployment(
            account, name: name, cluster: cluster, image: image, ram: ram, cpu: cpu, gpu: gpu,
            priorityText: String(priority))
    }

    func createDeployment(
        _ account: Account, name: String, cluster: Int64, image: String = "registry.example.com/team/app:1.0",
        ram: Int64, cpu: String, gpu: Int64, priorityText: String
    ) throws -> HTTPResponse {
        try postJSON(
            "/deployments/create/", account,
            #"{"name":"\#(name)","cluster_id":\#(cluster),"image_path":"\#(image)","ram_required":\#(ram),"#
                + #""cpu_required":\#(cpu),"gpu_required":\#(gpu),"priority":\#(priorityText)}"#)
    }

    func complete(_ account: Account, _ id: Int64) throws -> HTTPResponse {
        try post("/deployments/complete/?id=\(id)", account)
    }

    func get(_ path: String, _ account: Account, body: [String: Any]? = nil) throws -> HTTPResponse {
        let text = try body.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        return try send("GET", path, account, text)
    }

    func getJSON(_ path: String, _ account: Account) throws -> [String: Any] {
        let response = try get(path, account)
        guard response.status == 200, let object = response.jsonObject else {
            throw SchedulingFailure("GET \(path): \(response.status) \(response.text)")
        }
        return object
    }

    func post(_ path: String, _ account: Account) throws -> HTTPResponse {
        try send("POST", path, account, nil)
    }

    func postJSON(_ path: String, _ account: Account, _ body: String) throws -> HTTPResponse {
        try send("POST", path, account, body)
    }

    func send(_ method: String, _ path: String, _ account: Account?, _ body: String? = nil) throws -> HTTPResponse {
        var headers: [String: String] = [:]
        if let account { headers["Authorization"] = "Bearer \(account.token)" }
        if body != nil { headers["Content-Type"] = "application/json" }
        return try client.request(method, path, headers: headers, body: Array((body ?? "").utf8))
    }
}

func int(_ value: Any?) -> Int64? {
    guard let number = value as? NSNumber, !(value is String) else { return nil }
    return number.int64Value
}

/// The entries of a FastAPI 422 list.
func issues(_ response: HTTPResponse) -> [(loc: [String], type: String)] {
    guard let list = response.jsonObject?["detail"] as? [[String: Any]] else { return [] }
    return list.map { entry in
        let loc = (entry["loc"] as? [Any] ?? []).map { "\($0)" }
        return (loc, entry["type"] as? String ?? "")
    }
}

/// Expects `object` to have exactly the keys of `expected`, with equal values (numbers compared as numbers).
private func expectSameObject(
    _ object: [String: Any], _ expected: [String: Any], _ context: String = "",
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(Set(object.keys) == Set(expected.keys), "\(context) keys: \(object)", sourceLocation: sourceLocation)
    for (key, value) in expected {
        let actual = object[key]
        let same: Bool
        switch value {
        case let text as String: same = actual as? String == text
        case let number as Int64: same = int(actual) == number
        case let number as Int: same = int(actual) == Int64(number)
        case let number as Double: same = (actual as? NSNumber)?.doubleValue == number && !(actual is String)
        default: same = false
        }
        #expect(same, "\(context) \(key): \(actual ?? "missing") ≠ \(value)", sourceLocation: sourceLocation)
    }
}

private func waitUntil(timeout: TimeInterval, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Runs `body(0..<count)` on `count` threads of their own (not the cooperative pool, which has one per core) and
/// waits for all of them.
private func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            body(index)
            group.leave()
        }
        thread.start()
    }
    group.wait()
}

/// The status each create got, collected from several threads.
private final class LockedStatuses: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [(name: String, status: Int)] = []

    func add(_ name: String, _ status: Int) { lock.withLock { seen.append((name, status)) } }
    var all: [(name: String, status: Int)] { lock.withLock { seen } }
}

/// What the concurrent clients saw.
private final class LoadLedger: @unchecked Sendable {
    struct Report: CustomStringConvertible {
        var creates = 0
        var refused = 0
        var completions = 0
        var conflicts = 0
        var completedIDs: Set<Int64> = []
        var failures: [String] = []
        var description: String {
            "\(creates) created, \(refused) refused, \(completions) completed, \(conflicts) completions refused (409)"
        }
    }

    private let lock = NSLock()
    private var state = Report()

    func fail(_ message: String) {
        lock.withLock { state.failures.append(message) }
    }

    func recordCreate(fits: Bool, _ response: HTTPResponse) {
        lock.withLock {
            switch (fits, response.status) {
            case (true, 200):
                state.creates += 1
                if !["Running", "Pending"].contains(response.jsonObject?["status"] as? String) {
                    state.failures.append("create answered \(response.text)")
                }
            case (false, 422) where response.text.contains("Not Enough Resources"):
                state.refused += 1
            default:
                state.failures.append("create (fits: \(fits)) answered \(response.status) \(response.text)")
            }
        }
    }

    func recordCompletion(_ id: Int64, _ response: HTTPResponse) {
        lock.withLock {
            switch response.status {
            case 200:
                state.completions += 1
                if !state.completedIDs.insert(id).inserted { state.failures.append("\(id) completed twice") }
            case 409:
                // Completed or preempted by another client since this one read the running set.
                state.conflicts += 1
            default:
                state.failures.append("complete \(id) answered \(response.status) \(response.text)")
            }
        }
    }

    func report() -> Report { lock.withLock { state } }
}

private final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<HTTPResponse, SchedulingFailure>?

    var value: Result<HTTPResponse, SchedulingFailure>? { lock.withLock { result } }
    func finish(_ response: HTTPResponse) { lock.withLock { result = .success(response) } }
    func fail(_ message: String) { lock.withLock { result = .failure(SchedulingFailure(message)) } }

    /// Takes `cluster`'s scheduling lock on `holder`'s session, then creates a deployment of 1 RAM, 1 CPU at priority 1
    /// there on a thread of its own, and returns once that create waits on the lock; the outcome once it is answered.
    static func heldUp(
        _ api: SchedulingAPI, _ owner: Account, name: String, on cluster: Int64, by holder: TestDatabase,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Outcome {
        try holder.holdLock(of: cluster)
        let outcome = Outcome()
        Thread {
            do {
                outcome.finish(
                    try api.createDeployment(owner, name: name, cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 1)
                )
            } catch {
                outcome.fail("\(error)")
            }
        }.start()
        #expect(
            waitUntil(timeout: 5) { (try? holder.waitingAdvisoryLocks()) ?? 0 > 0 }, "the create never waited",
            sourceLocation: sourceLocation)
        return outcome
    }

    /// Expects the create to have been answered 200 with the deployment Running.
    func expectRunning(sourceLocation: SourceLocation = #_sourceLocation) {
        switch value {
        case .success(let response)?:
            #expect(response.status == 200, "\(response.text)", sourceLocation: sourceLocation)
            #expect(response.jsonObject?["status"] as? String == "Running", sourceLocation: sourceLocation)
        case .failure(let error)?:
            Issue.record("the held-up create failed: \(error)", sourceLocation: sourceLocation)
        case nil:
            Issue.record("the held-up create was not answered", sourceLocation: sourceLocation)
        }
    }
}

private final class TimingLedger: @unchecked Sendable {
    private let lock = NSLock()
    private var timings: [(seconds: Double, status: Int)] = []

    func add(_ seconds: Double, _ status: Int) { lock.withLock { timings.append((seconds, status)) } }
    func all() -> [(seconds: Double, status: Int)] { lock.withLock { timings } }
}

/// A seeded generator, so a failing random run can be replayed.
struct SchedulingRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - PostgreSQL and Redis helpers

struct DeploymentEvent: Equatable, CustomStringConvertible {
    var kind: String
    var causedBy: Int64?
    var description: String { causedBy.map { "\(kind)(by \($0))" } ?? kind }
}

/// A cluster as PostgreSQL has it, read in one snapshot.
struct ClusterState {
    var capacity: Resources
    var available: Resources
    var version: Int64
    var nextSeq: Int64
    var active: [ActiveDeployment]

    var snapshot: ClusterSnapshot { ClusterSnapshot(capacity: capacity, active: active) }
    var runningSum: Resources { active.filter(\.isRunning).map(\.request).reduce(Resources(), +) }
}

extension ClusterSnapshot {
    func adding(_ deployment: ActiveDeployment) -> ClusterSnapshot {
        ClusterSnapshot(capacity: capacity, active: active + [deployment])
    }

    func removing(_ id: Int64) -> ClusterSnapshot {
        ClusterSnapshot(capacity: capacity, active: active.filter { $0.id != id })
    }
}

extension ActiveDeployment {
    func renamed(to id: Int64) -> ActiveDeployment {
        ActiveDeployment(id: id, priority: priority, seq: seq, request: request, isRunning: isRunning)
    }
}

extension SchedulingPlan {
    /// The plan with the deployment `old` (a placeholder for one not created yet) called `new`.
    func renaming(_ old: Int64, to new: Int64) -> SchedulingPlan {
        func rename(_ id: Int64) -> Int64 { id == old ? new : id }
        return SchedulingPlan(
            start: start.map(rename), preempt: preempt.map(rename),
            preemptedBy: Dictionary(uniqueKeysWithValues: preemptedBy.map { (rename($0.key), rename($0.value)) }))
    }
}

extension TestDatabase {
    func clusterState(_ cluster: Int64) throws -> ClusterState {
        try query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        defer { _ = try? query("COMMIT") }
        let row = try query(
            """
            SELECT total_ram, total_cpu, total_gpu, available_ram, available_cpu, available_gpu, version, next_seq
            FROM clusters WHERE id = $1
            """, [String(cluster)])
        guard row.rowCount == 1 else { throw SchedulingFailure("no cluster \(cluster)") }
        let rows = try query(
            """
            SELECT id, priority, seq, ram_required, cpu_required, gpu_required, status = 'Running'
            FROM deployments WHERE cluster_id = $1 AND status IN ('Pending', 'Running') ORDER BY seq
            """, [String(cluster)])
        var active: [ActiveDeployment] = []
        for index in 0..<rows.rowCount {
            active.append(
                ActiveDeployment(
                    id: rows.int(index, 0)!, priority: Int32(rows.int(index, 1)!), seq: rows.int(index, 2)!,
                    request: Resources(ram: rows.int(index, 3)!, cpu: rows.int(index, 4)!, gpu: rows.int(index, 5)!),
                    isRunning: rows.bool(index, 6)))
        }
        return ClusterState(
            capacity: Resources(ram: row.int(0, 0)!, cpu: row.int(0, 1)!, gpu: row.int(0, 2)!),
            available: Resources(ram: row.int(0, 3)!, cpu: row.int(0, 4)!, gpu: row.int(0, 5)!),
            version: row.int(0, 6)!, nextSeq: row.int(0, 7)!, active: active)
    }

    func events(of deployment: Int64) throws -> [DeploymentEvent] {
        let rows = try query(
            "SELECT kind, caused_by FROM deployment_events WHERE deployment_id = $1 ORDER BY id", [String(deployment)])
        return (0..<rows.rowCount).map { DeploymentEvent(kind: rows.string($0, 0)!, causedBy: rows.int($0, 1)) }
    }

    func eventsByDeployment(cluster: Int64) throws -> [Int64: [DeploymentEvent]] {
        let rows = try query(
            "SELECT deployment_id, kind, caused_by FROM deployment_events WHERE cluster_id = $1 ORDER BY id",
            [String(cluster)])
        var result: [Int64: [DeploymentEvent]] = [:]
        for row in 0..<rows.rowCount {
            result[rows.int(row, 0)!, default: []].append(
                DeploymentEvent(kind: rows.string(row, 1)!, causedBy: rows.int(row, 2)))
        }
        return result
    }

    /// The active deployments of `cluster` that its scheduler's look-ups would miss: running ones before
    /// `running_from` along the running set's tail, pending ones before `pending_from` in scheduling order.
    func outsideScanStarts(_ cluster: Int64) throws -> [Int64] {
        let rows = try query(
            """
            SELECT d.id FROM deployments d JOIN clusters c ON c.id = d.cluster_id
            WHERE c.id = $1 AND (
                (d.status = 'Running' AND (d.priority < c.running_from_priority
                                           OR (d.priority = c.running_from_priority AND d.seq > c.running_from_seq)))
                OR (d.status = 'Pending' AND (d.priority > c.pending_from_priority
                                              OR (d.priority = c.pending_from_priority AND d.seq < c.pending_from_seq))))
            ORDER BY d.id
            """, [String(cluster)])
        return (0..<rows.rowCount).compactMap { rows.int($0, 0) }
    }

    /// Takes `cluster`'s scheduling lock for this session, which holds it until `releaseLock` or until the session
    /// ends (when the test's `TestDatabase` goes away, however the test ends).
    func holdLock(of cluster: Int64) throws { try query("SELECT pg_advisory_lock($1)", [String(cluster)]) }

    func releaseLock(of cluster: Int64) throws { try query("SELECT pg_advisory_unlock($1)", [String(cluster)]) }

    func waitingAdvisoryLocks() throws -> Int64 {
        try query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").int(0, 0) ?? 0
    }
}

/// Why a deployment's events do not tell the story of its final status, or nil when they do.
private func historyProblem(_ history: [DeploymentEvent], finalStatus: String, preemptions: Int64) -> String? {
    guard history.first?.kind == "Queued" else { return "does not start with Queued" }
    var state = "Pending"
    for event in history.dropFirst() {
        switch (state, event.kind) {
        case ("Pending", "Started"): state = "Running"
        case ("Running", "Preempted"):
            guard event.causedBy != nil else { return "a Preempted event names no preemptor" }
            state = "Pending"
        case ("Running", "Completed"): state = "Completed"
        default: return "\(event.kind) while \(state)"
        }
        if event.kind != "Preempted" && event.causedBy != nil { return "\(event.kind) names a cause" }
    }
    if state != finalStatus { return "events end in \(state)" }
    let counted = history.filter { $0.kind == "Preempted" }.count
    if counted != preemptions { return "\(counted) Preempted events but preemptions = \(preemptions)" }
    return nil
}

private struct RedisSnapshot: Equatable {
    var version: Int64?
    var available: Resources?
    var running: Set<String>
    var pending: Set<String>
}

private func readSnapshot(_ cluster: Int64, _ redis: RedisConnection) throws -> RedisSnapshot {
    let keys = DeploymentQueue.keys(cluster)
    func members(_ key: String) throws -> Set<String> {
        guard case .array(let items) = try redis.command(["ZRANGE", key, "0", "-1"]) else { return [] }
        return Set(items.compactMap { if case .string(let text) = $0 { text } else { nil } })
    }
    var meta: [String: Int64] = [:]
    if case .array(let items) = try redis.command(["HGETALL", keys[2]]) {
        for pair in stride(from: 0, to: items.count - 1, by: 2) {
            if case .string(let key) = items[pair], case .string(let value) = items[pair + 1] {
                meta[key] = Int64(value)
            }
        }
    }
    let available = meta["available_ram"].map { ram in
        Resources(ram: ram, cpu: meta["available_cpu"] ?? -1, gpu: meta["available_gpu"] ?? -1)
    }
    return RedisSnapshot(
        version: meta["version"], available: available, running: try members(keys[0]), pending: try members(keys[1]))
}
