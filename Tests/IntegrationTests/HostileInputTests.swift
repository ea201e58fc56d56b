import Domain
import Foundation
import Testing

@testable import HVFastCGI

/// What a careless or hostile client can send, generated from a seed so a failure replays: every route with bodies,
/// ids, query strings and tokens that are wrong in every way. Nothing may answer 5xx, every error must be in the
/// documented `{"detail": …}` shape, and the clusters the requests aim at must stay the policy's, with exact
/// accounting and a matching Redis snapshot.
extension SchedulingTests {
    @Test func hostileRequestsNeverGet5xxAndLeaveEveryClusterSettled() throws {
        let owner = try api.register("hostile-owner")
        let stranger = try api.register("hostile-stranger")
        let organization = try api.postJSON("/organizations/create/", owner, #"{"name":"hostile-org"}"#)
        #expect(organization.status == 200, "\(organization.text)")
        var clusters = [try api.createCluster(owner, name: "hostile", ram: 16, cpu: "8", gpu: 2)]
        var deployments: [Int64] = []
        for index in 0..<8 {
            let response = try api.createDeployment(
                owner, name: "hostile-\(index)", cluster: clusters[0], ram: Int64(2 + index % 5), cpu: "1.5",
                gpu: Int64(index % 2), priority: Int32(index % 3))
            deployments.append(try #require(int(response.jsonObject?["id"]), "\(response.text)"))
        }

        var random = SchedulingRandom(seed: 20_261_206)
        let fuzz = HostileRequests(owner: owner, stranger: stranger)
        // Routes that hash a password or count failures against this client's address are tried a few times only:
        // more would slow the suite down or lock later tests out of logging in.
        var budget = ["/users/register/": 4, "/users/login/": 4, "/organizations/join/": 4]
        var answered: [Int: Int] = [:]
        for step in 0..<1_500 {
            let request = fuzz.next(clusters: clusters, deployments: deployments, using: &random)
            if let left = budget[request.route] {
                guard left > 0 else { continue }
                budget[request.route] = left - 1
            }
            let response = try stack.client.request(
                request.method, request.path, headers: request.headers, body: Array(request.body.utf8))
            answered[response.status, default: 0] += 1
            let replay = "step \(step): \(request.method) \(request.path) \(request.body.prefix(300))"
            #expect(response.status < 500, "\(replay) → \(response.status) \(response.text)")
            if response.status >= 400 {
                #expect(response.jsonObject?["detail"] != nil, "\(replay) → \(response.status) \(response.text)")
            } else if let id = int(response.jsonObject?["id"]) {
                if request.route == "/clusters/create/" { clusters.append(id) }
                if request.route == "/deployments/create/" { deployments.append(id) }
            }
        }
        // The generator must reach the handlers, not only their validation: some changes succeed, most are refused.
        #expect(answered[200, default: 0] >= 100 && deployments.count >= 20, "\(answered), \(deployments.count)")
        #expect(answered.keys.filter { (400..<500).contains($0) }.count >= 4, "\(answered)")

        let database = try TestDatabase(stack.databaseURL)
        for cluster in clusters {
            let exists = try database.query("SELECT 1 FROM clusters WHERE id = $1", [String(cluster)])
            guard exists.rowCount == 1 else { continue }  // deleted by a request that was allowed to
            let state = try database.clusterState(cluster)
            #expect(Scheduler.plan(for: state.snapshot) == SchedulingPlan(), "cluster \(cluster) is not settled")
            #expect(state.available == state.capacity - state.runningSum, "cluster \(cluster)")
            // A cluster nothing has changed yet has no snapshot: the first change or read builds it.
            if state.version > 0 { try expectRedisMatches(cluster, database) }
        }
    }
}

/// The request generator: each request starts from a well-formed one for a route and is then damaged at random.
private struct HostileRequests {
    struct Request {
        var method: String
        var route: String
        var path: String
        var headers: [String: String]
        var body: String
    }

    let owner: Account
    let stranger: Account

    /// (method, route with `{id}` for a path id, fields of a well-formed body as JSON texts)
    private static let routes: [(String, String, [String: String])] = [
        ("POST", "/users/register/", ["username": #""hostile-new""#, "password": #""long enough pass""#]),
        ("POST", "/users/login/", ["username": #""hostile-owner""#, "password": #""wrong password""#]),
        ("POST", "/organizations/create/", ["name": #""another-org""#]),
        ("POST", "/organizations/join/", ["invite_code": #""not-a-code""#]),
        ("POST", "/clusters/create/", ["name": #""c""#, "total_ram": "8", "total_cpu": "4", "total_gpu": "1"]),
        ("GET", "/clusters/get_cluster/", [:]),
        (
            "POST", "/deployments/create/",
            [
                "name": #""d""#, "cluster_id": "{cluster}", "image_path": #""registry.example.com/team/app:1.0""#,
                "ram_required": "2", "cpu_required": "0.5", "gpu_required": "0", "priority": "1",
            ]
        ),
        ("GET", "/deployments/get_deployment/", [:]),
        ("POST", "/deployments/complete/", [:]),
        ("GET", "/v1/users/me", [:]),
        ("POST", "/v1/users/logout", [:]),
        ("GET", "/v1/organizations/me", [:]),
        ("POST", "/v1/organizations/me/invite-code", [:]),
        ("GET", "/v1/clusters", [:]),
        ("GET", "/v1/clusters/{id}", [:]),
        ("DELETE", "/v1/clusters/{id}", [:]),
        ("GET", "/v1/clusters/{id}/queue", [:]),
        (
            "POST", "/v1/clusters/{id}/what-if",
            ["ram_required": "2", "cpu_required": "0.5", "gpu_required": "0", "priority": "3"]
        ),
        ("GET", "/v1/deployments", [:]),
        ("GET", "/v1/deployments/{id}", [:]),
        ("GET", "/v1/deployments/{id}/events", [:]),
        ("POST", "/v1/deployments/{id}/cancel", [:]),
        ("GET", "/", [:]),
        ("GET", "/readyz", [:]),
        ("GET", "/openapi.json", [:]),
    ]

    /// The routes that change a cluster.
    private static let changes = routes.filter {
        ["/deployments/create/", "/deployments/complete/", "/v1/deployments/{id}/cancel"].contains($0.1)
    }

    /// Values of every JSON type, and the edges of numbers and strings.
    private static let values = [
        "0", "-1", "1", "2147483647", "2147483648", "-2147483649", "9223372036854775807", "9223372036854775808",
        "1e308", "-1e400", "0.0001", "1.5", "-0", "3.14159265358979323846264338327950288", "true", "false", "null",
        #""""#, #""1""#, #""-5""#, #""NaN""#, #""Infinity""#, #""\u0000""#, #""a\nb""#, #""ünïcødé ☃""#,
        #""\ud800""#, "[]", "[1,2]", "{}", #"{"a":1}"#, "\"" + String(repeating: "x", count: 5_000) + "\"",
        #""UPPER/Case:Tag""#, #""registry.example.com/a/b@sha256:0""#, #""../../etc/passwd""#,
        #""' OR 1=1 --""#,
    ]

    /// Ids that name nothing, or are not ids at all.
    private static let badIDs = ["0", "-1", "9223372036854775807", "99999999999999999999", "abc", "1.5", "%20", "1e3"]

    /// Bodies that are not a JSON object at all, or barely one.
    private static let malformed = [
        "", "{", "}", "{\"name\":", "null", "[]", "\"text\"", "42", "{\"a\":1,}", "{'a':1}", "\u{0}\u{1}\u{2}",
        String(repeating: "[", count: 3_000) + String(repeating: "]", count: 3_000),
        "{\"name\":\"x\",\"name\":\"y\"}", "\u{FEFF}{}",
        String(repeating: "{\"a\":", count: 500) + "1"
            + String(repeating: "}", count: 500),
    ]

    func next(clusters: [Int64], deployments: [Int64], using random: inout SchedulingRandom) -> Request {
        // A third of the requests change a cluster, so the scheduler sees enough of them to be tested.
        let (method, route, template) =
            (Int.random(in: 0..<3, using: &random) == 0 ? Self.changes : Self.routes).randomElement(using: &random)!
        let id = ((clusters + deployments).map(String.init) + Self.badIDs).randomElement(using: &random)!

        var fields = template.mapValues {
            $0 == "{cluster}" ? String(clusters.randomElement(using: &random)!) : $0
        }
        if fields["name"] != nil { fields["name"] = "\"hostile-\(random.next() % 1_000_000)\"" }
        if fields["priority"] != nil { fields["priority"] = String(Int.random(in: -2...5, using: &random)) }
        if fields["ram_required"] != nil { fields["ram_required"] = String(Int.random(in: 1...6, using: &random)) }
        // Damage a well-formed body most of the time: a field with a value of the wrong kind, one missing, one unknown.
        for _ in 0..<Int.random(in: 0...2, using: &random) {
            switch Int.random(in: 0..<4, using: &random) {
            case 0, 1:
                if let key = fields.keys.sorted().randomElement(using: &random) {
                    fields[key] = Self.values.randomElement(using: &random)!
                }
            case 2:
                if let key = fields.keys.sorted().randomElement(using: &random) { fields[key] = nil }
            default:
                fields["unexpected"] = Self.values.randomElement(using: &random)!
            }
        }
        // Lookups and completions take the id (or name) in the query string.
        if ["/clusters/get_cluster/", "/deployments/get_deployment/", "/deployments/complete/"].contains(route) {
            fields = [:]
        }
        let members = fields.sorted { $0.key < $1.key }.map { "\"\($0)\":\($1)" }
        var body = members.isEmpty ? "" : "{" + members.joined(separator: ",") + "}"
        if Int.random(in: 0..<10, using: &random) == 0 { body = Self.malformed.randomElement(using: &random)! }

        var path = route.replacingOccurrences(of: "{id}", with: id)
        switch Int.random(in: 0..<6, using: &random) {
        case 0: path += "?id=\(id)"
        case 1: path += "?deployment_name=hostile-\(Int.random(in: 0..<8, using: &random))&id=\(id)"
        case 2: path += "?name=%00%ff&limit=\(["0", "-5", "1000000", "x", "50"].randomElement(using: &random)!)"
        case 3: path += "?cursor=\(["garbage", "", "MTIz", "%2F%2F"].randomElement(using: &random)!)&status=Nope"
        case 4: path += "?invite_code=\(id)&cluster_id=\(id)&status=Pending"
        default: break
        }

        var headers: [String: String] = [:]
        // Logging out the owner would turn the rest of the run into 401s; strangers and forgers may.
        let owners = route == "/v1/users/logout" ? [stranger] : [owner, owner, owner, stranger]
        switch Int.random(in: 0..<12, using: &random) {
        case 0: break
        case 1: headers["Authorization"] = "Bearer not.a.token"
        case 2: headers["Authorization"] = "Basic " + Data("a:b".utf8).base64EncodedString()
        case 3: headers["Authorization"] = "Bearer " + owner.token.dropLast(3) + "AAA"
        default: headers["Authorization"] = "Bearer " + owners.randomElement(using: &random)!.token
        }
        if !body.isEmpty {
            headers["Content-Type"] =
                ["application/json", "application/json", "text/plain", "application/json; charset=latin1"]
                .randomElement(using: &random)!
        }
        return Request(method: method, route: route, path: path, headers: headers, body: body)
    }
}
