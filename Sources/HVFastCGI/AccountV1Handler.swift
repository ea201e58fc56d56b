/// The v1 account resources: `GET /v1/users/me`, `POST /v1/users/logout`, `GET /v1/organizations/me` and
/// `POST /v1/organizations/me/invite-code`.
struct AccountV1Handler {
    let database: Database
    let authenticator: Authenticator

    var routes: [Route] {
        [
            Route("GET", "/v1/users/me", me),
            Route("POST", "/v1/users/logout", logout),
            Route("GET", "/v1/organizations/me", organization),
            Route("POST", "/v1/organizations/me/invite-code", rotateInviteCode),
        ]
    }

    /// The caller (no row: unknown user or revoked token) with their organization.
    private static let caller = Statement(
        name: "v1_users_me",
        sql: """
            SELECT u.id, u.username, u.created_at, u.role, o.id, o.name
            FROM users u LEFT JOIN organizations o ON o.id = u.organization_id
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// Revokes every token issued up to now: tokens carry whole seconds, so "valid after" is the next second, and a
    /// login from then on issues tokens from that second (`UsersHandler`). No row: already revoked or unknown.
    private static let revoke = Statement(
        name: "v1_users_logout",
        sql: """
            UPDATE users SET tokens_valid_after = greatest(tokens_valid_after, $3)
            WHERE id = $1 AND tokens_valid_after <= $2 RETURNING id
            """)

    /// The caller's role and organization, and one row per member (oldest member first; NULL organization columns
    /// when the caller has none).
    private static let members = Statement(
        name: "v1_organizations_me",
        sql: """
            SELECT u.role, o.id, o.name, o.created_at, o.invite_code, m.id, m.username, m.role,
                   m.created_at
            FROM users u
            LEFT JOIN organizations o ON o.id = u.organization_id
            LEFT JOIN users m ON m.organization_id = o.id
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            ORDER BY m.id
            """)

    /// Replaces the invite code of the caller's organization when the caller is its admin; returns the caller's role
    /// and organization (NULLs when none) and the code now in force.
    private static let rotate = Statement(
        name: "v1_organizations_rotate",
        sql: """
            WITH caller AS (
                SELECT role, organization_id FROM users WHERE id = $1 AND tokens_valid_after <= $2
            ), rotated AS (
                UPDATE organizations o SET invite_code = $3 FROM caller c
                WHERE o.id = c.organization_id AND c.role = 'admin' RETURNING o.invite_code
            )
            SELECT c.role, c.organization_id, (SELECT invite_code FROM rotated) FROM caller c
            """)

    private func me(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let row = try database.run { try $0.executeAsCaller(AccountV1Handler.caller, caller, []) }
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("id")
            json.value(row.int(0, 0) ?? 0)
            json.key("username")
            json.value(row.string(0, 1) ?? "")
            json.key("created_at")
            json.value(row.timestamp(0, 2) ?? "")
            json.key("role")
            json.value(row.string(0, 3))
            json.key("organization")
            if let id = row.int(0, 4) {
                json.beginObject()
                json.key("id")
                json.value(id)
                json.key("name")
                json.value(row.string(0, 5) ?? "")
                json.endObject()
            } else {
                json.null()
            }
            json.endObject()
        }
    }

    private func logout(_ request: Request) throws -> Response {
        let now = unixTime()
        let caller = try authenticator.caller(request, now: now)
        let revoked = try database.run {
            try $0.execute(AccountV1Handler.revoke, [String(caller.id), String(caller.issuedAt), String(now + 1)])
        }
        guard revoked.rowCount == 1 else { throw HTTPError.unauthorized }
        return Response(status: 204, body: [], userID: caller.id)
    }

    private func organization(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let rows = try database.run { try $0.executeAsCaller(AccountV1Handler.members, caller, []) }
        guard let id = rows.int(0, 1) else { throw HTTPError(404, "You do not belong to an organization") }
        let isAdmin = rows.string(0, 0) == "admin"
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("id")
            json.value(id)
            json.key("name")
            json.value(rows.string(0, 2) ?? "")
            json.key("created_at")
            json.value(rows.timestamp(0, 3) ?? "")
            json.key("invite_code")
            json.value(isAdmin ? rows.string(0, 4) : nil)
            json.key("members")
            json.beginArray()
            for row in 0..<rows.rowCount {
                json.beginObject()
                json.key("id")
                json.value(rows.int(row, 5) ?? 0)
                json.key("username")
                json.value(rows.string(row, 6) ?? "")
                json.key("role")
                json.value(rows.string(row, 7) ?? "")
                json.key("joined_at")
                json.value(rows.timestamp(row, 8) ?? "")
                json.endObject()
            }
            json.endArray()
            json.endObject()
        }
    }

    private func rotateInviteCode(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let code = Base64URL.encode(try secureRandomBytes(count: 16))
        let row = try database.run {
            try $0.executeAsCaller(AccountV1Handler.rotate, caller, [code])
        }
        guard row.int(0, 1) != nil else { throw HTTPError(404, "You do not belong to an organization") }
        guard let current = row.string(0, 2) else {
            throw HTTPError(403, "Only an organization admin can rotate the invite code")
        }
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("invite_code")
            json.value(current)
            json.endObject()
        }
    }
}
