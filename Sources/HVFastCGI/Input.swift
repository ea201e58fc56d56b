import Domain

/// The fields of one request, read from its JSON body and, for lookups, its query string, with every problem
/// collected into one FastAPI-style `422`.
///
/// Unknown fields are ignored, as pydantic ignores them. A lookup given in both places takes the query's value.
struct Input {
    private let query: [String: String]
    private let body: [String: JSON]
    private let hasBody: Bool
    private(set) var issues: [ValidationFailure.Issue] = []

    /// Parses the body (an absent or empty body reads as no fields).
    ///
    /// - Throws: `ValidationFailure` when the body is not JSON, or not a JSON object.
    init(_ request: Request) throws(ValidationFailure) {
        query = request.query
        let text = request.body
        if text.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            body = [:]
            hasBody = false
            return
        }
        let parsed: JSON
        do {
            parsed = try JSON.parse(text)
        } catch {
            throw ValidationFailure([
                .init(
                    location: [.key("body"), .index(error.offset)], message: "JSON decode error", type: "json_invalid")
            ])
        }
        guard case .object(let members) = parsed else {
            throw ValidationFailure([
                .init(
                    location: [.key("body")],
                    message: "Input should be a valid dictionary or object to extract fields from",
                    type: "model_attributes_type")
            ])
        }
        body = members
        hasBody = true
    }

    /// Throws the collected problems, if any.
    func validate() throws(ValidationFailure) {
        if !issues.isEmpty { throw ValidationFailure(issues) }
    }

    // MARK: Body fields

    /// A required string field of the body, checked by `rule`.
    mutating func string(_ name: String, _ rule: (String) throws(ValidationError) -> String) -> String? {
        guard let value = required(name) else { return nil }
        guard case .string(let text) = value else {
            fail(["body", name], "Input should be a valid string", "string_type")
            return nil
        }
        return check(["body", name], text, rule)
    }

    /// A required number field of the body, converted exactly from its JSON text by `rule`.
    mutating func number<T>(_ name: String, _ rule: (String) throws(ValidationError) -> T) -> T? {
        guard let value = required(name) else { return nil }
        guard case .number(let text) = value else {
            fail(["body", name], numberTypeMessage(for: value), "int_type")
            return nil
        }
        return check(["body", name], text, rule)
    }

    /// A deployment's request and priority: `ram_required`, `cpu_required` (CPUs, kept in millicores),
    /// `gpu_required` and `priority`, as a create and a what-if read them; nil when any is missing or invalid.
    mutating func deploymentRequest() -> (request: Resources, priority: Int32)? {
        let ram = number("ram_required", JSONNumber.nonNegativeInt64)
        let cpu = decimal("cpu_required", JSONNumber.millicores)
        let gpu = number("gpu_required", JSONNumber.nonNegativeInt64)
        let priority = number("priority", JSONNumber.int32)
        guard let ram, let cpu, let gpu, let priority else { return nil }
        return (Resources(ram: ram, cpu: cpu, gpu: gpu), priority)
    }

    /// A required number field that may not be integral (`float_type` when it is not a number at all).
    mutating func decimal<T>(_ name: String, _ rule: (String) throws(ValidationError) -> T) -> T? {
        guard let value = required(name) else { return nil }
        guard case .number(let text) = value else {
            fail(["body", name], "Input should be a valid number", "float_type")
            return nil
        }
        return check(["body", name], text, rule)
    }

    // MARK: Lookups (query string or body)

    /// An optional lookup string, from the query string or the body.
    mutating func lookupString(_ name: String, _ rule: (String) throws(ValidationError) -> String) -> String? {
        if let text = query[name] { return check(["query", name], text, rule) }
        guard let value = body[name], value != .null else { return nil }
        guard case .string(let text) = value else {
            fail(["body", name], "Input should be a valid string", "string_type")
            return nil
        }
        return check(["body", name], text, rule)
    }

    /// An optional lookup id (a positive 64-bit integer), from the query string or the body.
    mutating func lookupID(_ name: String) -> Int64? {
        if let text = query[name] { return check(["query", name], text, JSONNumber.identifier) }
        guard let value = body[name], value != .null else { return nil }
        switch value {
        case .number(let text): return check(["body", name], text, JSONNumber.identifier)
        case .string(let text): return check(["body", name], text, JSONNumber.identifier)
        default:
            fail(["body", name], "Input should be a valid integer", "int_type")
            return nil
        }
    }

    // MARK: Helpers

    /// A body field that must be present; a missing body is reported once, as FastAPI does.
    private mutating func required(_ name: String) -> JSON? {
        guard hasBody else {
            if !issues.contains(where: { $0.location == [.key("body")] }) {
                fail(["body"], "Field required", "missing")
            }
            return nil
        }
        guard let value = body[name] else {
            fail(["body", name], "Field required", "missing")
            return nil
        }
        return value
    }

    private func numberTypeMessage(for value: JSON) -> String {
        if case .string = value { return "Input should be a valid integer, unable to parse string as an integer" }
        return "Input should be a valid integer"
    }

    private mutating func check<T>(_ location: [String], _ text: String, _ rule: (String) throws(ValidationError) -> T)
        -> T?
    {
        do {
            return try rule(text)
        } catch {
            fail(location, error.msg, error.type)
            return nil
        }
    }

    private mutating func fail(_ location: [String], _ message: String, _ type: String) {
        issues.append(.init(location: location.map { .key($0) }, message: message, type: type))
    }
}

extension JSONNumber {
    /// Row ids: positive integers that fit in `Int64`.
    static func identifier(_ text: String) throws(ValidationError) -> Int64 {
        let value = try nonNegativeInt64(text)
        guard value > 0 else { throw .lessThanMinimum("1") }
        return value
    }
}

/// The path's `{id}`: decimal digits naming a positive 64-bit integer (no sign, fraction or exponent, which a JSON
/// number could have), else a `422` located at `["path", "id"]` as FastAPI reports it.
func pathID(_ request: Request) throws(ValidationFailure) -> Int64 {
    let text = request.pathParameters["id"] ?? ""
    do throws(ValidationError) {
        guard isDecimal(text) else {
            throw ValidationError.invalidInteger
        }
        return try JSONNumber.identifier(text)
    } catch {
        throw ValidationFailure([.init(location: [.key("path"), .key("id")], message: error.msg, type: error.type)])
    }
}

/// Whether `text` is one or more ASCII decimal digits: what a number in a path or query string may be (no sign,
/// fraction, exponent or other script's digits, which a JSON number or `Int(_:)` could take).
func isDecimal(_ text: String) -> Bool {
    !text.isEmpty && text.utf8.allSatisfy { (0x30...0x39).contains($0) }
}
