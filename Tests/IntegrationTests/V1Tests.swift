import Domain
import Foundation
import Testing

@testable import HVFastCGI

/// The v1 API end to end, on the scheduling suite's stack: where a deployment stands in its queue, why it waits, its
/// history and cancelling it; a cluster's counts and utilization, and its queue snapshot page by page.
extension SchedulingTests {
    @Test func v1DeploymentSaysWhereItStandsAndWhyItWaits() throws {
        let owner = try api.register("v1-deployments")
        let cluster = try api.createCluster(owner, name: "why", ram: 10, cpu: "4", gpu: 2)
        var ids: [String: Int64] = [:]
        for (name, ram, cpu, gpu, priority) in [
            ("low", 4, "1", 1, 1), ("low2", 4, "1", 1, 1), ("wait", 4, "1.5", 1, 1), ("high", 5, "1", 2, 5),
            ("big", 8, "1", 0, 3),
        ] as [(String, Int64, String, Int64, Int32)] {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: ram, cpu: cpu, gpu: gpu, priority: priority)
            ids[name] = try #require(int(response.jsonObject?["id"]), "\(name): \(response.text)")
        }
        func v1(_ name: String) throws -> [String: Any] { try api.getJSON("/v1/deployments/\(ids[name]!)", owner) }
        func expectWaiting(_ name: String, position: Int64, reason: String, preemptions: Int64) throws {
            let object = try v1(name)
            #expect(object["status"] as? String == "Pending", "\(name): \(object)")
            #expect(int(object["queue_position"]) == position, "\(name): \(object)")
            #expect(object["pending_reason"] as? String == reason, "\(name): \(object)")
            #expect(int(object["preemptions"]) == preemptions, "\(name): \(object)")
        }

        // high (priority 5) needed both GPUs: it preempted both priority-1 deployments. In scheduling order the queue
        // is big (3), then low, low2 (which keep their places) and wait; ahead of the priority-1 ones runs high.
        let gpuShort = "insufficient gpu: needs 1, 0 free after the deployments ahead of it"
        try expectWaiting(
            "big", position: 1, reason: "insufficient ram: needs 8, 5 free after the deployments ahead of it",
            preemptions: 0)
        try expectWaiting("low", position: 2, reason: gpuShort, preemptions: 1)
        try expectWaiting("low2", position: 3, reason: gpuShort, preemptions: 1)
        try expectWaiting("wait", position: 4, reason: gpuShort, preemptions: 0)
        let high = try v1("high")
        #expect(high["status"] as? String == "Running" && high["queue_position"] is NSNull, "\(high)")
        #expect(high["pending_reason"] is NSNull && high["finished_at"] is NSNull, "\(high)")

        // The seed object's fields are the same; the timestamps are RFC 3339 UTC.
        let seed = try api.getJSON("/deployments/get_deployment/?id=\(ids["low"]!)", owner)
        let low = try v1("low")
        for (key, value) in seed { #expect("\(low[key] ?? "missing")" == "\(value)", "\(key)") }
        let timestamp = #/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/#
        #expect((low["created_at"] as? String)?.wholeMatch(of: timestamp) != nil, "\(low)")
        #expect((low["started_at"] as? String)?.wholeMatch(of: timestamp) != nil, "\(low)")
        #expect(try v1("wait")["started_at"] is NSNull)

        // Completing high lets big (priority 3) run; it leaves 2 of 10 RAM, which no priority-1 deployment fits in.
        #expect(try api.complete(owner, ids["high"]!).status == 200)
        #expect(try v1("big")["status"] as? String == "Running")
        let ramShort = "insufficient ram: needs 4, 2 free after the deployments ahead of it"
        try expectWaiting("low", position: 1, reason: ramShort, preemptions: 1)
        try expectWaiting("wait", position: 3, reason: ramShort, preemptions: 0)
        // Positions come from the snapshot only when it shows the version PostgreSQL does; otherwise they are counted.
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        _ = try redis.command(["HSET", "hv:q:\(cluster):meta", "version", "999999"])
        try expectWaiting("low2", position: 2, reason: ramShort, preemptions: 1)
        try expectWaiting("wait", position: 3, reason: ramShort, preemptions: 0)
        _ = try redis.command(["DEL"] + DeploymentQueue.keys(cluster))
        try expectWaiting("wait", position: 3, reason: ramShort, preemptions: 0)
        let completed = try v1("high")
        #expect(completed["status"] as? String == "Completed", "\(completed)")
        #expect((completed["finished_at"] as? String)?.wholeMatch(of: timestamp) != nil, "\(completed)")

        // low's history: queued, started, preempted by high.
        let history = try api.getJSON("/v1/deployments/\(ids["low"]!)/events/", owner)
        #expect(int(history["deployment_id"]) == ids["low"])
        let events = try #require(history["events"] as? [[String: Any]], "\(history)")
        #expect(events.map { $0["kind"] as? String ?? "" } == ["Queued", "Started", "Preempted"], "\(history)")
        #expect(events.map { int($0["caused_by"]) } == [nil, nil, ids["high"]], "\(history)")
        #expect(events.allSatisfy { ($0["at"] as? String)?.wholeMatch(of: timestamp) != nil }, "\(history)")
    }

    @Test func v1DeploymentRefusesBadIDsOtherTenantsAndAnonymousCallers() throws {
        let owner = try api.register("v1-owner")
        let stranger = try api.register("v1-stranger")
        let cluster = try api.createCluster(owner, name: "mine", ram: 4, cpu: "1", gpu: 0)
        let created = try api.createDeployment(
            owner, name: "d", cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 0)
        let id = try #require(int(created.jsonObject?["id"]), "\(created.text)")

        for path in ["/v1/deployments/\(id)", "/v1/deployments/\(id)/events"] {
            let foreign = try api.get(path, stranger)
            #expect(foreign.status == 404 && foreign.jsonObject?["detail"] as? String == "Deployment not found")
            let anonymous = try stack.client.get(path)
            #expect(anonymous.status == 401 && anonymous.header("WWW-Authenticate") == "Bearer", "\(anonymous.text)")
            #expect(try api.post(path, owner).status == 405)
        }
        #expect(try api.get("/v1/deployments/\(Int64.max)", owner).status == 404)
        for (text, type) in [
            ("abc", "int_parsing"), ("1e3", "int_parsing"), ("-1", "int_parsing"), ("0", "greater_than_equal"),
            ("99999999999999999999", "less_than_equal"),
        ] {
            let response = try api.get("/v1/deployments/\(text)/events", owner)
            #expect(response.status == 422, "\(text): \(response.text)")
            #expect(issues(response).map(\.loc) == [["path", "id"]] && issues(response).first?.type == type, "\(text)")
        }
    }

    @Test func cancellingAPendingDeploymentChangesNothingElseAndARunningOneAdmitsWork() throws {
        let owner = try api.register("v1-cancel")
        let cluster = try api.createCluster(owner, name: "cancel", ram: 10, cpu: "4", gpu: 0)
        var ids: [String: Int64] = [:]
        for (name, ram, priority, status) in [
            ("a", 6, 1, "Running"), ("b", 6, 1, "Pending"), ("c", 4, 0, "Running"), ("d", 1, 0, "Pending"),
        ] as [(String, Int64, Int32, String)] {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: ram, cpu: "1", gpu: 0, priority: priority)
            #expect(response.jsonObject?["status"] as? String == status, "\(name): \(response.text)")
            ids[name] = try #require(int(response.jsonObject?["id"]), "\(name): \(response.text)")
        }
        let database = try TestDatabase(stack.databaseURL)
        func status(_ name: String) throws -> String? {
            try api.getJSON("/deployments/get_deployment/?id=\(ids[name]!)", owner)["status"] as? String
        }

        // A waiting deployment leaves the queue; nothing else moves and nothing is freed.
        let versionBefore = try database.clusterState(cluster).version
        let cancelled = try api.post("/v1/deployments/\(ids["d"]!)/cancel", owner)
        #expect(cancelled.status == 200, "\(cancelled.text)")
        let object = try #require(cancelled.jsonObject, "\(cancelled.text)")
        #expect(object["status"] as? String == "Cancelled" && object["finished_at"] is String, "\(object)")
        #expect(object["queue_position"] is NSNull && object["pending_reason"] is NSNull, "\(object)")
        #expect(try [status("a"), status("b"), status("c")] == ["Running", "Pending", "Running"])
        var state = try database.clusterState(cluster)
        #expect(state.version == versionBefore + 1 && state.available.ram == 0, "\(state)")
        try expectRedisMatches(cluster, database)

        // Only active deployments can be cancelled, and a cancelled one cannot be completed.
        let again = try api.post("/v1/deployments/\(ids["d"]!)/cancel/", owner)
        #expect(again.status == 409, "\(again.text)")
        #expect(
            again.jsonObject?["detail"] as? String
                == "Deployment is Cancelled; only a Pending or Running deployment can be cancelled")
        let complete = try api.complete(owner, ids["d"]!)
        #expect(
            complete.status == 409
                && complete.jsonObject?["detail"] as? String
                    == "Deployment is Cancelled; only a Running deployment can be completed",
            "\(complete.text)")

        // A running one frees its room like a completion: b (priority 1) starts beside c.
        #expect(try api.post("/v1/deployments/\(ids["a"]!)/cancel", owner).status == 200)
        #expect(try [status("a"), status("b"), status("c")] == ["Cancelled", "Running", "Running"])
        state = try database.clusterState(cluster)
        #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan())
        #expect(state.available == state.capacity - state.runningSum)
        try expectRedisMatches(cluster, database)
        #expect(
            try database.events(of: ids["a"]!) == [
                DeploymentEvent(kind: "Queued", causedBy: nil), DeploymentEvent(kind: "Started", causedBy: nil),
                DeploymentEvent(kind: "Cancelled", causedBy: nil),
            ])
        #expect(
            try database.events(of: ids["d"]!) == [
                DeploymentEvent(kind: "Queued", causedBy: nil), DeploymentEvent(kind: "Cancelled", causedBy: nil),
            ])

        let stranger = try api.register("v1-cancel-stranger")
        #expect(try api.post("/v1/deployments/\(ids["b"]!)/cancel", stranger).status == 404)
        #expect(try stack.client.request("POST", "/v1/deployments/\(ids["b"]!)/cancel").status == 401)
        #expect(try api.get("/v1/deployments/\(ids["b"]!)/cancel", owner).status == 405)
        #expect(try status("b") == "Running")
    }

    @Test func v1ClusterCountsItsDeploymentsAndPagesItsQueueInSchedulingOrder() throws {
        let owner = try api.register("v1-queue")
        let cluster = try api.createCluster(owner, name: "queue", ram: 10, cpu: "4", gpu: 2)
        let database = try TestDatabase(stack.databaseURL)
        let empty = try api.getJSON("/v1/clusters/\(cluster)/queue", owner)
        #expect(int(empty["version"]) == 0 && (empty["deployments"] as? [Any])?.isEmpty == true, "\(empty)")
        #expect(empty["next_cursor"] is NSNull, "\(empty)")
        for (name, ram, cpu, gpu, priority) in [
            ("low", 4, "1", 1, 1), ("low2", 4, "1", 1, 1), ("wait", 4, "1.5", 1, 1), ("high", 5, "1", 2, 5),
            ("big", 8, "1", 0, 3), ("small", 1, "0.5", 0, 1), ("tail", 1, "0.5", 0, -3),
        ] as [(String, Int64, String, Int64, Int32)] {
            let response = try api.createDeployment(
                owner, name: name, cluster: cluster, ram: ram, cpu: cpu, gpu: gpu, priority: priority)
            #expect(response.status == 200, "\(name): \(response.text)")
        }

        let state = try database.clusterState(cluster)
        let running = Int64(state.active.filter(\.isRunning).count)
        // The sizes come from the snapshot at the same version, or else from PostgreSQL: the same either way.
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        let fromSnapshot = try api.getJSON("/v1/clusters/\(cluster)", owner)
        _ = try redis.command(["HINCRBY", "hv:q:\(cluster):meta", "version", "1000"])
        let counted = try api.getJSON("/v1/clusters/\(cluster)", owner)
        _ = try redis.command(["HINCRBY", "hv:q:\(cluster):meta", "version", "-1000"])
        for object in [fromSnapshot, counted] {
            #expect(int(object["running_count"]) == running, "\(object)")
            #expect(int(object["pending_count"]) == Int64(state.active.count) - running, "\(object)")
        }
        let object = fromSnapshot
        #expect(int(object["available_ram"]) == state.available.ram && object["created_at"] is String, "\(object)")
        let used = state.capacity - state.available
        let utilization = try #require(object["utilization"] as? [String: NSNumber], "\(object)")
        #expect(utilization["ram"]?.doubleValue == Double(used.ram) / 10, "\(object)")
        #expect(utilization["gpu"]?.doubleValue == Double(used.gpu) / 2, "\(object)")

        // Page by page, two at a time: the whole active set in scheduling order, pending ones numbered 1, 2, …
        var seen: [(id: Int64, status: String, position: Int64?)] = []
        var cursor: String?
        var pages = 0
        repeat {
            let page = try api.getJSON(
                "/v1/clusters/\(cluster)/queue?limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""), owner)
            #expect(int(page["version"]) == state.version, "\(page)")
            let entries = try #require(page["deployments"] as? [[String: Any]], "\(page)")
            #expect(entries.count <= 2)
            seen += entries.map { (int($0["id"]) ?? 0, $0["status"] as? String ?? "", int($0["queue_position"])) }
            cursor = page["next_cursor"] as? String
            pages += 1
        } while cursor != nil && pages < 10
        let order = state.active.sorted { $0.schedulesBefore($1) }
        #expect(seen.map(\.id) == order.map(\.id))
        #expect(seen.map(\.status) == order.map { $0.isRunning ? "Running" : "Pending" })
        #expect(seen.compactMap(\.position) == Array(1...Int64(order.filter { !$0.isRunning }.count)))
        #expect(pages == 4)

        // A lost snapshot is rebuilt from PostgreSQL on the read.
        _ = try redis.command(["DEL", "hv:q:\(cluster):meta", "hv:q:\(cluster):running", "hv:q:\(cluster):pending"])
        let rebuilt = try api.getJSON("/v1/clusters/\(cluster)/queue?limit=1000", owner)
        #expect((rebuilt["deployments"] as? [[String: Any]])?.map { int($0["id"]) ?? 0 } == order.map(\.id))
        try expectRedisMatches(cluster, database)

        let stranger = try api.register("v1-queue-stranger")
        for path in ["/v1/clusters/\(cluster)", "/v1/clusters/\(cluster)/queue"] {
            let foreign = try api.get(path, stranger)
            #expect(foreign.status == 404 && foreign.jsonObject?["detail"] as? String == "Cluster not found")
            #expect(try stack.client.get(path).status == 401)
        }
        let bad = try api.get("/v1/clusters/\(cluster)/queue?limit=1001&cursor=7fffffff", owner)
        #expect(bad.status == 422, "\(bad.text)")
        #expect(issues(bad).map(\.loc) == [["query", "limit"], ["query", "cursor"]], "\(bad.text)")
        #expect(try api.get("/v1/clusters/x", owner).status == 422)
    }
}

/// The v1 account endpoints: who the caller is, logging out everywhere, the organization and its invite code.
extension SchedulingTests {
    @Test func v1AccountShowsTheCallerAndTheirOrganization() throws {
        let admin = try api.register("v1-admin")
        let member = try api.register("v1-member")
        let loner = try api.register("v1-loner")
        let me = try api.getJSON("/v1/users/me", loner)
        #expect(int(me["id"]) == loner.id && me["username"] as? String == "v1-loner", "\(me)")
        #expect(me["organization"] is NSNull && me["role"] is NSNull && me["created_at"] is String, "\(me)")
        let none = try api.get("/v1/organizations/me", loner)
        #expect(none.status == 404, "\(none.text)")
        #expect(try api.post("/v1/organizations/me/invite-code", loner).status == 404)

        let created = try api.postJSON("/organizations/create/", admin, #"{"name":"v1-org"}"#)
        let organizationID = try #require(int(created.jsonObject?["id"]), "\(created.text)")
        let firstCode = try #require(created.jsonObject?["invite_code"] as? String)
        #expect(try api.post("/organizations/join/?invite_code=\(firstCode)", member).status == 200)

        let adminView = try api.getJSON("/v1/organizations/me", admin)
        #expect(int(adminView["id"]) == organizationID && adminView["invite_code"] as? String == firstCode)
        let members = try #require(adminView["members"] as? [[String: Any]], "\(adminView)")
        #expect(members.map { $0["username"] as? String ?? "" } == ["v1-admin", "v1-member"])
        #expect(members.map { $0["role"] as? String ?? "" } == ["admin", "member"])
        let memberView = try api.getJSON("/v1/organizations/me", member)
        #expect(memberView["invite_code"] is NSNull && (memberView["members"] as? [Any])?.count == 2, "\(memberView)")
        let memberMe = try api.getJSON("/v1/users/me", member)
        #expect(memberMe["role"] as? String == "member", "\(memberMe)")
        #expect(int((memberMe["organization"] as? [String: Any])?["id"]) == organizationID, "\(memberMe)")

        // Only the admin rotates the code; the old one stops working, the new one works.
        let refused = try api.post("/v1/organizations/me/invite-code", member)
        #expect(refused.status == 403, "\(refused.text)")
        let rotated = try api.post("/v1/organizations/me/invite-code/", admin)
        let newCode = try #require(rotated.jsonObject?["invite_code"] as? String, "\(rotated.text)")
        #expect(newCode != firstCode && newCode.count >= 22)
        let late = try api.register("v1-late")
        let stale = try api.post("/organizations/join/?invite_code=\(firstCode)", late)
        #expect(stale.status == 400 && stale.jsonObject?["detail"] as? String == "Invalid invite code")
        #expect(try api.post("/organizations/join/?invite_code=\(newCode)", late).status == 200)
    }

    @Test func v1LogoutRevokesEveryTokenIssuedSoFarButNotLaterLogins() throws {
        let user = try api.register("v1-logout")
        let credentials = #"{"username":"v1-logout","password":"scheduling-password"}"#
        let second = try #require(
            try stack.client.request("POST", "/users/login/", body: Array(credentials.utf8)).jsonObject?[
                "access_token"] as? String)
        let logout = try api.post("/v1/users/logout", user)
        #expect(logout.status == 204 && logout.body.isEmpty, "\(logout.text)")
        for token in [user.token, second] {
            let after = try api.get("/v1/users/me", Account(id: user.id, token: token))
            #expect(after.status == 401, "\(after.text)")
        }
        #expect(try api.post("/v1/users/logout", user).status == 401)
        // A login right after, even within the same second, works.
        let fresh = try #require(
            try stack.client.request("POST", "/users/login/", body: Array(credentials.utf8)).jsonObject?[
                "access_token"] as? String)
        #expect(try api.get("/v1/users/me", Account(id: user.id, token: fresh)).status == 200)
    }
}

/// `POST /v1/clusters/{id}/what-if` predicts exactly what the create would do.
extension SchedulingTests {
    @Test func whatIfPredictsWhatTheCreateThenDoes() throws {
        let owner = try api.register("v1-what-if")
        let database = try TestDatabase(stack.databaseURL)
        var outcomes: Set<String> = []

        /// Asks what-if, creates the same deployment, and compares the prediction with what the create did.
        func predictThenCreate(
            _ cluster: Int64, _ name: String, ram: Int64, cpu: String, gpu: Int64, priority: Int32
        ) throws {
            let body =
                #"{"name":"\#(name)","cluster_id":\#(cluster),"image_path":"registry.example.com/a/b:1","#
                + #""ram_required":\#(ram),"cpu_required":\#(cpu),"gpu_required":\#(gpu),"priority":\#(priority)}"#
            let predicted = try api.postJSON("/v1/clusters/\(cluster)/what-if", owner, body)
            let prediction = try #require(predicted.jsonObject, "\(predicted.text)")
            let lastEvent = try database.query("SELECT coalesce(max(id), 0) FROM deployment_events").int(0, 0) ?? 0
            let created = try api.postJSON("/deployments/create/", owner, body)
            let id = try #require(int(created.jsonObject?["id"]), "\(created.text)")
            let events = try database.query(
                "SELECT deployment_id, kind FROM deployment_events WHERE id > $1 ORDER BY id", [String(lastEvent)])
            let changes = (0..<events.rowCount).map { (id: events.int($0, 0)!, kind: events.string($0, 1)!) }
            let preempted = changes.filter { $0.kind == "Preempted" }.map(\.id)
            let started = changes.filter { $0.kind == "Started" && $0.id != id }.map(\.id)
            let runs = created.jsonObject?["status"] as? String == "Running"
            let context = "\(name): \(prediction)"
            #expect((prediction["would_run"] as? Bool) == runs, "\(context)")
            #expect(Set((prediction["preempts"] as? [Any] ?? []).compactMap(int)) == Set(preempted), "\(context)")
            #expect(Set((prediction["also_starts"] as? [Any] ?? []).compactMap(int)) == Set(started), "\(context)")
            let actual = try api.getJSON("/v1/deployments/\(id)", owner)
            #expect(int(prediction["queue_position"]) == int(actual["queue_position"]), "\(context) vs \(actual)")
            #expect(prediction["pending_reason"] as? String == actual["pending_reason"] as? String, "\(context)")
            outcomes.insert(runs ? "runs" : "waits")
            if !preempted.isEmpty { outcomes.insert("preempts") }
            if !started.isEmpty { outcomes.insert("also starts") }
        }

        // Preempting a big deployment leaves room for a small waiting one, which starts too.
        let small = try api.createCluster(owner, name: "what-if-small", ram: 10, cpu: "4", gpu: 0)
        try predictThenCreate(small, "big", ram: 8, cpu: "1", gpu: 0, priority: 1)
        try predictThenCreate(small, "small", ram: 3, cpu: "1", gpu: 0, priority: 0)
        try predictThenCreate(small, "urgent", ram: 5, cpu: "1", gpu: 0, priority: 5)
        #expect(outcomes == ["runs", "waits", "preempts", "also starts"], "\(outcomes)")

        let cluster = try api.createCluster(owner, name: "what-if", ram: 12, cpu: "6", gpu: 2)
        var random = SchedulingRandom(seed: 2026)
        outcomes = []
        for step in 0..<60 {
            let running = try database.query(
                "SELECT id FROM deployments WHERE cluster_id = $1 AND status = 'Running' ORDER BY id",
                [String(cluster)])
            if step % 4 == 3, running.rowCount > 0 {
                let id = try #require(running.int(Int.random(in: 0..<running.rowCount, using: &random), 0))
                #expect(try api.complete(owner, id).status == 200)
                continue
            }
            try predictThenCreate(
                cluster, "w\(step)", ram: Int64.random(in: 1...7, using: &random),
                cpu: JSONNumber.text(millicores: Int64.random(in: 1...8, using: &random) * 250),
                gpu: Int64.random(in: 0...1, using: &random), priority: Int32.random(in: 0...4, using: &random))
        }
        #expect(outcomes.isSuperset(of: ["preempts", "runs", "waits"]), "\(outcomes)")

        // A waiting request's place is the same whether the snapshot counts it or PostgreSQL does.
        let waits = #"{"ram_required":12,"cpu_required":6,"gpu_required":2,"priority":0}"#
        let counted = try api.postJSON("/v1/clusters/\(cluster)/what-if", owner, waits).jsonObject
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        _ = try redis.command(["HINCRBY", "hv:q:\(cluster):meta", "version", "1000"])
        let recounted = try api.postJSON("/v1/clusters/\(cluster)/what-if", owner, waits).jsonObject
        _ = try redis.command(["HINCRBY", "hv:q:\(cluster):meta", "version", "-1000"])
        #expect(counted?["would_run"] as? Bool == false, "\(counted ?? [:])")
        #expect(int(counted?["queue_position"]) == int(recounted?["queue_position"]), "\(recounted ?? [:])")
        let pendingNow = try database.clusterState(cluster).active.filter { !$0.isRunning }.count
        #expect(int(counted?["queue_position"]) == Int64(pendingNow) + 1)

        // It changes nothing, and refuses what a create refuses.
        let before = try database.clusterState(cluster)
        let request = #"{"ram_required":13,"cpu_required":1,"gpu_required":0,"priority":1}"#
        let tooBig = try api.postJSON("/v1/clusters/\(cluster)/what-if", owner, request)
        #expect(
            tooBig.status == 422
                && tooBig.jsonObject?["detail"] as? String == "Not Enough Resources on the cluster for this deployment")
        let missing = try api.postJSON("/v1/clusters/\(cluster)/what-if", owner, #"{"ram_required":1}"#)
        #expect(missing.status == 422 && issues(missing).count == 3, "\(missing.text)")
        let stranger = try api.register("v1-what-if-stranger")
        let fits = #"{"ram_required":1,"cpu_required":1,"gpu_required":0,"priority":1}"#
        #expect(try api.postJSON("/v1/clusters/\(cluster)/what-if", stranger, fits).status == 404)
        let after = try database.clusterState(cluster)
        #expect(after.version == before.version && after.active == before.active)
    }
}

/// The v1 lists and deleting a cluster.
extension SchedulingTests {
    @Test func v1ListsPageThroughTheCallersClustersAndDeploymentsWithFilters() throws {
        let owner = try api.register("v1-lists")
        let clusters = try (1...3).map { try api.createCluster(owner, name: "list-\($0)", ram: 4, cpu: "2", gpu: 0) }
        var ids: [Int64] = []
        for (index, ram) in [3, 3, 1].enumerated() {
            let response = try api.createDeployment(
                owner, name: "item-\(index)", cluster: clusters[0], ram: Int64(ram), cpu: "1", gpu: 0, priority: 0)
            ids.append(try #require(int(response.jsonObject?["id"]), "\(response.text)"))
        }
        // ram 3 runs, the next 3 waits, 1 runs beside the first.
        func walk(_ path: String, limit: Int) throws -> [[String: Any]] {
            var items: [[String: Any]] = []
            var cursor: String?
            repeat {
                let separator = path.contains("?") ? "&" : "?"
                let page = try api.getJSON(
                    path + "\(separator)limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? ""), owner)
                let entries = try #require(page["items"] as? [[String: Any]], "\(page)")
                #expect(entries.count <= limit)
                items += entries
                cursor = page["next_cursor"] as? String
            } while cursor != nil && items.count < 100
            return items
        }
        #expect(try walk("/v1/clusters", limit: 1).map { int($0["id"]) ?? 0 } == clusters)
        let first = try #require(try walk("/v1/clusters", limit: 10).first)
        #expect(first["name"] as? String == "list-1" && first["utilization"] is [String: Any], "\(first)")
        #expect(try walk("/v1/deployments", limit: 2).map { int($0["id"]) ?? 0 } == ids)
        #expect(try walk("/v1/deployments?status=Pending", limit: 2).map { int($0["id"]) ?? 0 } == [ids[1]])
        #expect(
            try walk("/v1/deployments?cluster_id=\(clusters[0])&status=Running", limit: 5).map { int($0["id"]) ?? 0 }
                == [ids[0], ids[2]])
        #expect(try walk("/v1/deployments?cluster_id=\(clusters[0])", limit: 2).map { int($0["id"]) ?? 0 } == ids)
        #expect(try walk("/v1/deployments?cluster_id=\(clusters[1])", limit: 5).isEmpty)
        let item = try #require(try walk("/v1/deployments", limit: 5).first)
        #expect(item["status"] as? String == "Running" && item["created_at"] is String, "\(item)")

        let stranger = try api.register("v1-lists-stranger")
        for path in ["/v1/clusters", "/v1/deployments"] {
            let empty = try api.getJSON(path, stranger)
            #expect((empty["items"] as? [Any])?.isEmpty == true && empty["next_cursor"] is NSNull, "\(empty)")
            #expect(try stack.client.get(path).status == 401)
        }
        let bad = try api.get("/v1/deployments?status=Done&cluster_id=-1&limit=0&cursor=x", owner)
        #expect(bad.status == 422, "\(bad.text)")
        #expect(
            Set(issues(bad).map { $0.loc.joined(separator: ".") })
                == ["query.status", "query.cluster_id", "query.limit", "query.cursor"], "\(bad.text)")
    }

    @Test func aClusterIsDeletedOnlyWithNothingActiveAndTakesItsHistoryAlong() throws {
        let owner = try api.register("v1-delete")
        let cluster = try api.createCluster(owner, name: "doomed", ram: 4, cpu: "2", gpu: 0)
        let running = try api.createDeployment(
            owner, name: "r", cluster: cluster, ram: 3, cpu: "1", gpu: 0, priority: 0)
        let waiting = try api.createDeployment(
            owner, name: "w", cluster: cluster, ram: 3, cpu: "1", gpu: 0, priority: 0)
        let runningID = try #require(int(running.jsonObject?["id"]))
        let waitingID = try #require(int(waiting.jsonObject?["id"]))

        let stranger = try api.register("v1-delete-stranger")
        #expect(try api.send("DELETE", "/v1/clusters/\(cluster)", stranger).status == 404)
        let refused = try api.send("DELETE", "/v1/clusters/\(cluster)", owner)
        #expect(refused.status == 409, "\(refused.text)")
        #expect(
            refused.jsonObject?["detail"] as? String
                == "Cluster has 2 pending or running deployments; complete or cancel them first")
        #expect(try api.post("/v1/deployments/\(waitingID)/cancel", owner).status == 200)
        #expect(try api.complete(owner, runningID).status == 200)

        let deleted = try api.send("DELETE", "/v1/clusters/\(cluster)/", owner)
        #expect(deleted.status == 204 && deleted.body.isEmpty, "\(deleted.text)")
        for path in ["/v1/clusters/\(cluster)", "/v1/clusters/\(cluster)/queue", "/v1/deployments/\(runningID)"] {
            #expect(try api.get(path, owner).status == 404, "\(path)")
        }
        #expect(try api.send("DELETE", "/v1/clusters/\(cluster)", owner).status == 404)
        let database = try TestDatabase(stack.databaseURL)
        #expect(try database.events(of: runningID).isEmpty)
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        #expect(try redis.command(["EXISTS"] + DeploymentQueue.keys(cluster)) == .integer(0))
        // Its name is free again, and creating into the old id is a 404.
        #expect(try api.createCluster(owner, name: "doomed", ram: 4, cpu: "2", gpu: 0) != cluster)
        let orphan = try api.createDeployment(
            owner, name: "late", cluster: cluster, ram: 1, cpu: "1", gpu: 0, priority: 0)
        #expect(orphan.status == 404, "\(orphan.text)")
    }
}
