import Domain

/// `POST /organizations/create/` and `POST /organizations/join/`.
struct OrganizationsHandler {
    let database: Database
    let authenticator: Authenticator
    let limiter: RateLimiter

    var routes: [Route] {
        [
            Route("POST", "/organizations/create", create),
            Route("POST", "/organizations/join", join),
        ]
    }

    /// Wrong invite codes allowed per user and per client address in each window.
    static let failuresPerUser = 10
    static let failuresPerAddress = 100

    /// Creates the organization and, when the caller belongs to none, makes them its admin: one statement, so the
    /// caller's existence and token revocation are checked in the same round trip.
    private static let create = Statement(
        name: "organizations_create",
        sql: """
            WITH caller AS (
                SELECT id, organization_id FROM users WHERE id = $1 AND tokens_valid_after <= $2 FOR UPDATE
            ), created AS (
                INSERT INTO organizations (name, invite_code) SELECT $3, $4 FROM caller RETURNING id, name, invite_code
            ), joined AS (
                UPDATE users SET organization_id = created.id, role = 'admin' FROM created, caller
                WHERE users.id = caller.id AND caller.organization_id IS NULL RETURNING users.id
            )
            SELECT created.id, created.name, created.invite_code FROM created
            """)

    /// The caller and the organization the code names (NULLs when the code matches none).
    private static let lookup = Statement(
        name: "organizations_lookup",
        sql: """
            SELECT u.username, u.organization_id, o.id, o.name
            FROM users u LEFT JOIN organizations o ON o.invite_code = $3
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)
    private static let join = Statement(
        name: "organizations_join",
        sql: "UPDATE users SET organization_id = $2, role = 'member' WHERE id = $1 AND organization_id IS NULL")

    /// Invite codes are URL-safe base64; anything else cannot match one.
    private static func inviteCode(_ text: String) throws(ValidationError) -> String {
        guard !text.isEmpty else { throw .stringTooShort(minimum: 1) }
        guard text.utf8.count <= 64 else { throw .stringTooLong(maximum: 64) }
        let urlSafe = text.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
        guard urlSafe else { throw .stringPatternMismatch(pattern: "^[A-Za-z0-9_-]+$") }
        return text
    }

    private func create(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        var input = try Input(request)
        let name = input.string("name", Validation.name)
        try input.validate()
        guard let name else { throw ValidationFailure(input.issues) }
        let inviteCode = Base64URL.encode(try secureRandomBytes(count: 16))
        let result: PostgresResult
        do {
            result = try database.run {
                try $0.execute(
                    OrganizationsHandler.create, [String(caller.id), String(caller.issuedAt), name, inviteCode])
            }
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw HTTPError(409, "Organization with the given name already exists")
        }
        guard result.rowCount == 1, let id = result.int(0, 0) else { throw HTTPError.unauthorized }
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("id")
            json.value(id)
            json.key("name")
            json.value(name)
            json.key("invite_code")
            json.value(inviteCode)
            json.endObject()
        }
    }

    private func join(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        var input = try Input(request)
        let code = input.lookupString("invite_code", OrganizationsHandler.inviteCode)
        if code == nil && input.issues.isEmpty {
            throw ValidationFailure([
                .init(location: [.key("query"), .key("invite_code")], message: "Field required", type: "missing")
            ])
        }
        try input.validate()
        guard let code else { throw ValidationFailure(input.issues) }

        let limits = [
            RateLimiter.Limit(key: "invite:user:\(caller.id)", allowed: OrganizationsHandler.failuresPerUser),
            RateLimiter.Limit(
                key: "invite:addr:" + request.remoteAddress, allowed: OrganizationsHandler.failuresPerAddress),
        ]
        if let seconds = limiter.retryAfter(limits) { throw RateLimiter.tooManyAttempts(retryAfter: seconds) }

        let message = try database.run { connection -> String in
            let found = try connection.executeAsCaller(OrganizationsHandler.lookup, caller, [code])
            guard let username = found.string(0, 0) else { throw HTTPError.unauthorized }
            guard let organizationID = found.int(0, 2), let organizationName = found.string(0, 3) else {
                limiter.recordFailure(limits)
                throw HTTPError(400, "Invalid invite code")
            }
            let joined = "User \(username) joined organization \(organizationName)"
            let current = found.int(0, 1)
            if current == organizationID { return joined }
            guard current == nil,
                try connection.execute(OrganizationsHandler.join, [String(caller.id), String(organizationID)])
                    .affectedRows == 1
            else { throw HTTPError(409, "User already belongs to an organization") }
            return joined
        }
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("message")
            json.value(message)
            json.endObject()
        }
    }
}
