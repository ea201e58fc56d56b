/// An HTTP request as the worker received it from nginx over FastCGI.
struct Request: Sendable {
    var method: String
    /// The percent-decoded path, without the query.
    var path: String
    /// Percent-decoded query parameters; for a repeated name the last value wins, as in Starlette.
    var query: [String: String]
    /// The few headers handlers use, by lowercase name.
    var headers: [String: String]
    var body: [UInt8]
    var requestID: String
    var remoteAddress: String
    /// Values of `{name}` segments of the matched route.
    var pathParameters: [String: String] = [:]

    init(
        method: String, target: String, headers: [String: String] = [:], body: [UInt8] = [],
        requestID: String = "test", remoteAddress: String = "127.0.0.1"
    ) {
        self.method = method
        let (path, query) = splitTarget(target)
        self.path = percentDecode(path, plusIsSpace: false)
        self.query = parseQuery(query)
        self.headers = headers
        self.body = body
        self.requestID = requestID
        self.remoteAddress = remoteAddress
    }
}

/// Splits `/path?query` at the first `?`.
func splitTarget(_ target: String) -> (path: Substring, query: Substring) {
    guard let mark = target.firstIndex(of: "?") else { return (target[...], "") }
    return (target[..<mark], target[target.index(after: mark)...])
}

/// `application/x-www-form-urlencoded` query parsing: `&`-separated pairs, `+` is a space.
func parseQuery(_ query: Substring) -> [String: String] {
    var result: [String: String] = [:]
    for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
        if let eq = pair.firstIndex(of: "=") {
            result[percentDecode(pair[..<eq], plusIsSpace: true)] = percentDecode(
                pair[pair.index(after: eq)...], plusIsSpace: true)
        } else {
            result[percentDecode(pair, plusIsSpace: true)] = ""
        }
    }
    return result
}

/// Decodes `%XX` escapes (a malformed escape stays as written); bytes that are not UTF-8 become U+FFFD.
func percentDecode(_ text: Substring, plusIsSpace: Bool) -> String {
    let utf8 = text.utf8
    guard utf8.contains(UInt8(ascii: "%")) || (plusIsSpace && utf8.contains(UInt8(ascii: "+"))) else {
        return String(text)
    }
    func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
    let bytes = Array(utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = 0
    while i < bytes.count {
        let byte = bytes[i]
        if byte == UInt8(ascii: "%"), i + 2 < bytes.count,
            let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2])
        {
            out.append(high << 4 | low)
            i += 3
        } else {
            out.append(plusIsSpace && byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            i += 1
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// What a handler answers.
struct Response: Sendable {
    var status: Int
    var headers: [(String, String)] = []
    var body: [UInt8]
    var contentType = "application/json; charset=utf-8"
    /// The authenticated caller, for the request log line; never sent.
    var userID: Int64?

    /// A JSON response built by `build`, answering `userID` (for the request log).
    static func json(_ status: Int = 200, for userID: Int64? = nil, _ build: (inout JSONWriter) -> Void) -> Response {
        var writer = JSONWriter()
        build(&writer)
        return Response(status: status, body: writer.bytes, userID: userID)
    }

    /// `{"detail": message}`, the FastAPI error shape.
    static func detail(_ status: Int, _ message: String, headers: [(String, String)] = []) -> Response {
        var response = json(status) {
            $0.beginObject()
            $0.key("detail")
            $0.value(message)
            $0.endObject()
        }
        response.headers = headers
        return response
    }

    /// The CGI-style response libfcgi sends to nginx: `Status:` and headers, a blank line, the body.
    func encoded(requestID: String) -> [UInt8] {
        var head = "Status: \(status) \(reasonPhrase(status))\r\n"
        head += "Content-Type: \(contentType)\r\n"
        head += "Content-Length: \(body.count)\r\n"
        head += "X-Request-ID: \(requestID)\r\n"
        for (name, value) in headers { head += name + ": " + value + "\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        bytes += body
        return bytes
    }
}

func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 200: "OK"
    case 201: "Created"
    case 204: "No Content"
    case 400: "Bad Request"
    case 401: "Unauthorized"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 409: "Conflict"
    case 413: "Content Too Large"
    case 415: "Unsupported Media Type"
    case 422: "Unprocessable Content"
    case 429: "Too Many Requests"
    case 500: "Internal Server Error"
    case 503: "Service Unavailable"
    default: "Status"
    }
}

/// An error a client may see: it carries its status and a public message, never internals.
protocol ClientError: Error {
    var response: Response { get }
}

/// `{"detail": ...}` errors with a fixed status.
struct HTTPError: ClientError, Equatable {
    let status: Int
    let detail: String
    var headers: [Header] = []

    struct Header: Equatable {
        let name: String
        let value: String
    }

    init(_ status: Int, _ detail: String, headers: [Header] = []) {
        self.status = status
        self.detail = detail
        self.headers = headers
    }

    var response: Response { .detail(status, detail, headers: headers.map { ($0.name, $0.value) }) }

    static let notFound = HTTPError(404, "Not Found")
    static let unauthorized = HTTPError(
        401, "Could not validate credentials", headers: [Header(name: "WWW-Authenticate", value: "Bearer")])
    static let bodyTooLarge = HTTPError(413, "Request body too large (limit 64 KiB)")
}

/// FastAPI-style `422`: one entry per problem, `loc` starting with `body` or `query`.
struct ValidationFailure: ClientError, Equatable {
    struct Issue: Equatable, Sendable {
        enum Location: Equatable, Sendable {
            case key(String)
            case index(Int)
        }
        var location: [Location]
        var message: String
        var type: String
    }

    var issues: [Issue]

    init(_ issues: [Issue]) { self.issues = issues }

    var response: Response {
        .json(422) { json in
            json.beginObject()
            json.key("detail")
            json.beginArray()
            for issue in issues {
                json.beginObject()
                json.key("loc")
                json.beginArray()
                for part in issue.location {
                    switch part {
                    case .key(let name): json.value(name)
                    case .index(let index): json.value(index)
                    }
                }
                json.endArray()
                json.key("msg")
                json.value(issue.message)
                json.key("type")
                json.value(issue.type)
                json.endObject()
            }
            json.endArray()
            json.endObject()
        }
    }
}

/// A dependency the request needs is down: `503`, and the service recovers by itself.
struct ServiceUnavailable: ClientError {
    let dependency: String
    var response: Response {
        .detail(503, "Service temporarily unavailable: \(dependency) is not reachable", headers: [("Retry-After", "1")])
    }
}
