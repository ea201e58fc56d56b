import Foundation

/// Seed-API calls for the integration tests: one method per endpoint, returning the raw `HTTPResponse`, plus
/// `newUser` for the common "register and log in" step. Nothing is checked here; tests assert on the responses.
struct APIClient: Sendable {
    /// A registered, logged-in user.
    struct User: Sendable {
        let id: Int64
        let username: String
        let password: String
        let token: String

        /// `Authorization: Bearer <token>`.
        var auth: [String: String] { ["Authorization": "Bearer \(token)"] }
    }

    /// Why a setup step (not the behaviour under test) failed.
    struct SetupFailure: Error, CustomStringConvertible {
        let description: String
    }

    let http: HTTPClient

    init(_ http: HTTPClient) {
        self.http = http
    }

    /// A name no other test uses: `prefix` followed by a short random suffix (username-safe characters only).
    static func unique(_ prefix: String) -> String {
        prefix + "-" + UUID().uuidString.prefix(13).lowercased()
    }

    func register(_ username: String, password: String) throws -> HTTPResponse {
        try http.post("/users/register/", json: ["username": username, "password": password])
    }

    func login(_ username: String, password: String) throws -> HTTPResponse {
        try http.post("/users/login/", json: ["username": username, "password": password])
    }

    /// Registers and logs in a user named `APIClient.unique(prefix)`.
    /// Throws `SetupFailure` when either call does not answer 200.
    func newUser(_ prefix: String = "user", password: String = "correct horse") throws -> User {
        let username = APIClient.unique(prefix)
        let registered = try register(username, password: password)
        guard registered.status == 200 else {
            throw SetupFailure(description: "register \(username): \(registered.status) \(registered.text)")
        }
        let loggedIn = try login(username, password: password)
        guard loggedIn.status == 200, let object = loggedIn.jsonObject,
            let id = (object["id"] as? NSNumber)?.int64Value, let token = object["access_token"] as? String
        else { throw SetupFailure(description: "login \(username): \(loggedIn.status) \(loggedIn.text)") }
        return User(id: id, username: username, password: password, token: token)
    }

    func createOrganization(_ name: String, as user: User) throws -> HTTPResponse {
        try http.post("/organizations/create/", json: ["name": name], headers: user.auth)
    }

    /// Joins with `inviteCode` sent in the query string.
    func joinOrganization(inviteCode: String, as user: User) throws -> HTTPResponse {
        try http.request(
            "POST", "/organizations/join/?invite_code=" + APIClient.queryEncoded(inviteCode), headers: user.auth)
    }

    func createCluster(
        _ name: String, ram: Any = 1024, cpu: Any = 4, gpu: Any = 1, as user: User
    ) throws -> HTTPResponse {
        try http.post(
            "/clusters/create/", json: ["name": name, "total_ram": ram, "total_cpu": cpu, "total_gpu": gpu],
            headers: user.auth)
    }

    func getCluster(id: Int64, as user: User) throws -> HTTPResponse {
        try http.get("/clusters/get_cluster/?id=\(id)", headers: user.auth)
    }

    func getCluster(name: String, as user: User) throws -> HTTPResponse {
        try http.get("/clusters/get_cluster/?cluster_name=" + APIClient.queryEncoded(name), headers: user.auth)
    }

    /// Percent-encodes everything but unreserved characters, so any text survives a query string.
    static func queryEncoded(_ text: String) -> String {
        var allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// A parsed JSON value for whole-object comparisons: `#expect(response.value == ["id": 1, "name": "x"])`.
/// Numbers compare by value (`140` equals `140.0`); check the number text with `HTTPResponse.text` when it matters.
enum JSONValue: Equatable, Sendable, Decodable, CustomStringConvertible, ExpressibleByNilLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(nilLiteral: ()) { self = .null }
    init(booleanLiteral value: Bool) { self = .bool(value) }
    init(integerLiteral value: Int64) { self = .number(Double(value)) }
    init(floatLiteral value: Double) { self = .number(value) }
    init(stringLiteral value: String) { self = .string(value) }
    init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// An id as a JSON number.
    static func id(_ value: Int64) -> JSONValue { .number(Double(value)) }

    subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    var description: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .number(let value): "\(value)"
        case .string(let value): "\"\(value)\""
        case .array(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .object(let members):
            "{" + members.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
        }
    }
}

extension HTTPResponse {
    /// The body as a `JSONValue`, or nil when it is not JSON.
    var value: JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(body))
    }
}
