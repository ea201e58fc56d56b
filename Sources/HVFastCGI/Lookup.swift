import Domain

/// How a seed-API client names one cluster or deployment: by `id`, by name, or both (which must agree), from the
/// query string or the JSON body.
enum Lookup: Equatable {
    case id(Int64)
    case name(String)
    case both(Int64, String)

    /// Reads `id` and `nameField` (`cluster_name`, `deployment_name`).
    ///
    /// - Throws: `ValidationFailure` for malformed values; `HTTPError` 400 when neither is given.
    init(_ request: Request, nameField: String, noun: String) throws {
        var input = try Input(request)
        let id = input.lookupID("id")
        let name = input.lookupString(nameField, Validation.name)
        try input.validate()
        switch (id, name) {
        case (let id?, let name?): self = .both(id, name)
        case (let id?, nil): self = .id(id)
        case (nil, let name?): self = .name(name)
        case (nil, nil): throw HTTPError(400, "Provide the \(noun)'s id or \(nameField)")
        }
    }

    /// Finds the resource with two statements keyed by id and by name (each checking the caller as
    /// `PostgresConnection.executeAsCaller` does); `decode` reads a row, nil when the LEFT JOIN found nothing.
    ///
    /// - Throws: `HTTPError` 401/404/400; `ServiceUnavailable` when PostgreSQL is down.
    func find<T>(
        _ noun: String, by caller: Caller, byID: Statement, byName: Statement, in database: Database,
        decode: (PostgresResult) -> T?, nameOf: (T) -> String
    ) throws -> T {
        try database.run { connection in
            try resolve(
                noun: noun, byID: { decode(try connection.executeAsCaller(byID, caller, [String($0)])) },
                byName: { decode(try connection.executeAsCaller(byName, caller, [$0])) }, nameOf: nameOf)
        }
    }

    /// Finds the resource with `byID` / `byName`, which return nil when nothing in the caller's scope has that key.
    ///
    /// - Throws: `HTTPError` 404 when nothing matches, 400 when the id and the name name different resources.
    func resolve<T>(
        noun: String, byID: (Int64) throws -> T?, byName: (String) throws -> T?, nameOf: (T) -> String
    ) throws -> T {
        let notFound = HTTPError(404, "\(noun.prefix(1).uppercased() + noun.dropFirst()) not found")
        switch self {
        case .id(let id):
            guard let found = try byID(id) else { throw notFound }
            return found
        case .name(let name):
            guard let found = try byName(name) else { throw notFound }
            return found
        case .both(let id, let name):
            let found = try byID(id)
            if let found, nameOf(found) == name { return found }
            if found == nil, try byName(name) == nil { throw notFound }
            throw HTTPError(400, "id and \(noun)_name refer to different \(noun)s")
        }
    }
}
