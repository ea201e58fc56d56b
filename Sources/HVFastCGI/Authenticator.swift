import Glibc

/// The caller named by a valid bearer token. Whether that user still exists and the token is not revoked is
/// checked by the SQL of each request, in the same round trip as the data it reads.
struct Caller: Equatable {
    let id: Int64
    let issuedAt: Int64
}

/// Checks `Authorization: Bearer <JWT>` without touching the database.
struct Authenticator {
    let signer: TokenSigner

    /// - Throws: `HTTPError.unauthorized` for a missing, malformed, expired or badly signed token.
    func caller(_ request: Request, now: Int64) throws(HTTPError) -> Caller {
        guard let header = request.headers["authorization"] else { throw .unauthorized }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthorized }
        do {
            let claims = try signer.verify(String(parts[1]), now: now)
            return Caller(id: claims.subject, issuedAt: claims.issuedAt)
        } catch {
            throw .unauthorized
        }
    }
}

/// Seconds since the Unix epoch; tokens and revocation use whole seconds.
func unixTime() -> Int64 { Int64(time(nil)) }

extension PostgresConnection {
    /// Runs a statement whose `$1, $2` are the caller's id and token issue time and which returns rows (one, or one
    /// per item of a list) exactly while that user exists and the token is not revoked (the caller's check costs no
    /// extra round trip).
    ///
    /// - Throws: `HTTPError.unauthorized` when it returns no row; `PostgresError`.
    func executeAsCaller(_ statement: Statement, _ caller: Caller, _ parameters: [String?]) throws -> PostgresResult {
        let result = try execute(statement, [String(caller.id), String(caller.issuedAt)] + parameters)
        guard result.rowCount > 0 else { throw HTTPError.unauthorized }
        return result
    }
}
