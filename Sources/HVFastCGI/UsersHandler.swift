import Domain

/// `POST /users/register/` and `POST /users/login/`.
struct UsersHandler {
    let database: Database
    let hasher: PasswordHasher
    let signer: TokenSigner
    let limiter: RateLimiter
    let tokenLifetime: Int64
    let log: Log

    var routes: [Route] {
        [
            Route("POST", "/users/register", register),
            Route("POST", "/users/login", login),
        ]
    }

    /// Failed logins allowed per username and per client address in each window.
    static let failuresPerUsername = 10
    static let failuresPerAddress = 100

    private static let insert = Statement(
        name: "users_insert", sql: "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id")
    private static let byName = Statement(
        name: "users_by_name", sql: "SELECT id, password_hash, tokens_valid_after FROM users WHERE username = $1")
    private static let rehash = Statement(
        name: "users_rehash", sql: "UPDATE users SET password_hash = $2 WHERE id = $1")

    /// The `username` and `password` of a register or login body.
    ///
    /// - Throws: `ValidationFailure` listing every problem.
    private static func credentials(_ request: Request) throws -> (username: String, password: String) {
        var input = try Input(request)
        let username = input.string("username", Validation.username)
        let password = input.string("password", Validation.password)
        try input.validate()
        guard let username, let password else { throw ValidationFailure(input.issues) }
        return (username, password)
    }

    private func register(_ request: Request) throws -> Response {
        let (username, password) = try UsersHandler.credentials(request)
        let hash = try hasher.hash(Array(password.utf8))
        let id: Int64
        do {
            id = try database.run { try $0.execute(UsersHandler.insert, [username, hash]).int(0, 0) ?? 0 }
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw HTTPError(409, "Username already exists")
        }
        return .json(for: id) { json in
            json.beginObject()
            json.key("id")
            json.value(id)
            json.key("username")
            json.value(username)
            json.key("organization_id")
            json.null()
            json.endObject()
        }
    }

    private func login(_ request: Request) throws -> Response {
        let (username, password) = try UsersHandler.credentials(request)
        let limits = [
            RateLimiter.Limit(key: "login:user:" + username, allowed: UsersHandler.failuresPerUsername),
            RateLimiter.Limit(key: "login:addr:" + request.remoteAddress, allowed: UsersHandler.failuresPerAddress),
        ]
        if let seconds = limiter.retryAfter(limits) { throw RateLimiter.tooManyAttempts(retryAfter: seconds) }

        let row = try database.run { connection -> (Int64, String, Int64)? in
            let result = try connection.execute(UsersHandler.byName, [username])
            guard result.rowCount == 1, let id = result.int(0, 0), let hash = result.string(0, 1) else { return nil }
            return (id, hash, result.int(0, 2) ?? 0)
        }
        let passwordBytes = Array(password.utf8)
        // An unknown username costs the same hash as a wrong password and gets the same answer.
        guard let (id, stored, validAfter) = row else {
            hasher.verifyAgainstDummy(passwordBytes)
            limiter.recordFailure(limits)
            throw HTTPError(401, "Invalid credentials")
        }
        let check = hasher.verify(passwordBytes, against: stored)
        guard check.isMatch else {
            limiter.recordFailure(limits)
            throw HTTPError(401, "Invalid credentials")
        }
        if check.needsRehash, let upgraded = try? hasher.hash(passwordBytes) {
            _ = try? database.run { try $0.execute(UsersHandler.rehash, [String(id), upgraded]) }
            log.info("password hash upgraded to the current parameters", ["user_id": String(id)])
        }
        // A logout in this second revoked tokens issued up to it: this one is issued from the next second.
        let token = try signer.sign(
            subject: id, issuedAt: max(unixTime(), validAfter), lifetimeSeconds: tokenLifetime)
        return .json(for: id) { json in
            json.beginObject()
            json.key("id")
            json.value(id)
            json.key("username")
            json.value(username)
            json.key("access_token")
            json.value(token)
            json.key("token_type")
            json.value("bearer")
            json.endObject()
        }
    }
}
