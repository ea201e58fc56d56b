import Domain

/// `POST /clusters/create/` and `GET /clusters/get_cluster/`.
///
/// Every statement joins the caller's row, so authentication (the user exists, the token is not revoked) and
/// tenancy cost no extra round trip; a cluster outside the caller's scope reads exactly like a missing one.
struct ClustersHandler {
    let database: Database
    let authenticator: Authenticator

    var routes: [Route] {
        [
            Route("POST", "/clusters/create", create),
            Route("GET", "/clusters/get_cluster", get),
        ]
    }

    static let columns =
        "c.id, c.name, c.total_ram, c.total_cpu, c.total_gpu, c.available_ram, c.available_cpu, c.available_gpu"

    static let insert = Statement(
        name: "clusters_insert",
        sql: """
            INSERT INTO clusters (organization_id, owner_id, name, total_ram, total_cpu, total_gpu,
                                  available_ram, available_cpu, available_gpu)
            SELECT u.organization_id, u.id, $3, $4::bigint, $5::bigint, $6::bigint, $4, $5, $6
            FROM users u WHERE u.id = $1 AND u.tokens_valid_after <= $2
            RETURNING id
            """)
    static let byID = read(where: "id")
    static let byName = read(where: "name")

    /// The caller (no row: unknown user or revoked token) and the cluster whose `column` is `$3` in their scope.
    private static func read(where column: String) -> Statement {
        Statement(
            name: "clusters_by_\(column)",
            sql: """
                SELECT \(columns) FROM users u LEFT JOIN clusters c ON c.\(column) = $3 AND \(sqlInScope("c"))
                WHERE u.id = $1 AND u.tokens_valid_after <= $2
                """)
    }

    private func create(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        var input = try Input(request)
        let name = input.string("name", Validation.name)
        let ram = input.number("total_ram", JSONNumber.nonNegativeInt64)
        let cpu = input.decimal("total_cpu", JSONNumber.millicores)
        let gpu = input.number("total_gpu", JSONNumber.nonNegativeInt64)
        try input.validate()
        guard let name, let ram, let cpu, let gpu else { throw ValidationFailure(input.issues) }
        let result: PostgresResult
        do {
            result = try database.run {
                try $0.execute(
                    ClustersHandler.insert,
                    [String(caller.id), String(caller.issuedAt), name, String(ram), String(cpu), String(gpu)])
            }
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw HTTPError(409, "Cluster with the given name already exists")
        }
        guard result.rowCount == 1, let id = result.int(0, 0) else { throw HTTPError.unauthorized }
        let cluster = ClusterRow(
            id: id, name: name, total: Resources(ram: ram, cpu: cpu, gpu: gpu),
            available: Resources(ram: ram, cpu: cpu, gpu: gpu))
        return .json(for: caller.id) { cluster.write(to: &$0) }
    }

    private func get(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let lookup = try Lookup(request, nameField: "cluster_name", noun: "cluster")
        let cluster = try lookup.find(
            "cluster", by: caller, byID: ClustersHandler.byID, byName: ClustersHandler.byName, in: database,
            decode: { ClusterRow($0, row: 0, column: 0) }, nameOf: \.name)
        return .json(for: caller.id) { cluster.write(to: &$0) }
    }
}

/// A cluster as the seed API shows it.
struct ClusterRow: Equatable {
    let id: Int64
    let name: String
    let total: Resources
    let available: Resources

    init(id: Int64, name: String, total: Resources, available: Resources) {
        self.id = id
        self.name = name
        self.total = total
        self.available = available
    }

    /// Reads `ClustersHandler.columns` starting at `column`; nil when the LEFT JOIN found no cluster.
    init?(_ result: PostgresResult, row: Int, column: Int) {
        guard let id = result.int(row, column), let name = result.string(row, column + 1) else { return nil }
        func value(_ offset: Int) -> Int64 { result.int(row, column + offset) ?? 0 }
        self.init(
            id: id, name: name, total: Resources(ram: value(2), cpu: value(3), gpu: value(4)),
            available: Resources(ram: value(5), cpu: value(6), gpu: value(7)))
    }

    /// `{"id", "name", "total_ram", "total_cpu", "total_gpu", "available_ram", "available_cpu", "available_gpu"}`.
    func write(to json: inout JSONWriter) {
        json.beginObject()
        writeMembers(to: &json)
        json.endObject()
    }

    /// The members of `write(to:)`, for representations that extend the seed object (v1).
    func writeMembers(to json: inout JSONWriter) {
        json.key("id")
        json.value(id)
        json.key("name")
        json.value(name)
        json.key("total_ram")
        json.value(total.ram)
        json.key("total_cpu")
        json.rawNumber(JSONNumber.text(millicores: total.cpu))
        json.key("total_gpu")
        json.value(total.gpu)
        json.key("available_ram")
        json.value(available.ram)
        json.key("available_cpu")
        json.rawNumber(JSONNumber.text(millicores: available.cpu))
        json.key("available_gpu")
        json.value(available.gpu)
    }
}
