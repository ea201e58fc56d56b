import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A response read by `HTTPClient`.
struct HTTPResponse: Sendable {
    /// The status code, e.g. 200.
    var status: Int
    /// The reason phrase of the status line, e.g. "OK".
    var reason: String
    /// Header fields in the order received, names as sent.
    var headerFields: [(name: String, value: String)]
    /// The body, de-chunked when the response used chunked transfer encoding.
    var body: [UInt8]

    /// Header fields by lowercased name; repeated fields are joined with ", ".
    var headers: [String: String] {
        var result: [String: String] = [:]
        for (name, value) in headerFields {
            let key = name.lowercased()
            result[key] = result[key].map { "\($0), \(value)" } ?? value
        }
        return result
    }

    /// The value of the header `name`, compared case-insensitively.
    func header(_ name: String) -> String? {
        headers[name.lowercased()]
    }

    /// The body decoded as UTF-8 (invalid sequences replaced).
    var text: String {
        String(decoding: body, as: UTF8.self)
    }

    /// The body parsed with `JSONSerialization` (fragments allowed), or nil when it is not JSON.
    var json: Any? {
        guard !body.isEmpty else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])
    }

    /// The body as a JSON object, or nil.
    var jsonObject: [String: Any]? {
        json as? [String: Any]
    }
}

/// Why an `HTTPClient` request failed.
enum HTTPClientError: Error, CustomStringConvertible {
    case badAddress(String)
    case connectFailed(host: String, port: Int, errno: Int32)
    case ioFailed(operation: String, errno: Int32)
    case timedOut(after: TimeInterval, received: Int)
    case malformedResponse(String)

    var description: String {
        switch self {
        case .badAddress(let host):
            return "not an IPv4 address: \(host)"
        case .connectFailed(let host, let port, let code):
            return "connect to \(host):\(port) failed: \(String(cString: strerror(code)))"
        case .ioFailed(let operation, let code):
            return "\(operation) failed: \(String(cString: strerror(code)))"
        case .timedOut(let seconds, let received):
            return "no complete response within \(seconds) s (\(received) bytes received)"
        case .malformedResponse(let why):
            return "malformed HTTP response: \(why)"
        }
    }
}

/// A tiny synchronous HTTP/1.1 client for the integration tests: one TCP connection per request
/// (`Connection: close`), no redirects, no TLS, no URLSession.
struct HTTPClient: Sendable {
    var host: String
    var port: Int
    /// Seconds allowed for connecting, sending and reading the whole response.
    var timeout: TimeInterval

    init(port: Int, host: String = "127.0.0.1", timeout: TimeInterval = 10) {
        self.host = host
        self.port = port
        self.timeout = timeout
    }

    /// Sends one request and reads the whole response.
    ///
    /// `Host`, `Connection: close` and (when there is a body, or for POST, PUT and PATCH)
    /// `Content-Length` are added unless `headers` sets them.
    /// Throws `HTTPClientError` when the connection fails, times out or the response is malformed.
    func request(
        _ method: String,
        _ path: String,
        headers: [String: String] = [:],
        body: [UInt8] = []
    ) throws -> HTTPResponse {
        let given = Set(headers.keys.map { $0.lowercased() })
        var head = "\(method) \(path) HTTP/1.1\r\n"
        if !given.contains("host") { head += "Host: \(host):\(port)\r\n" }
        if !given.contains("connection") { head += "Connection: close\r\n" }
        if !given.contains("content-length"), !body.isEmpty || ["POST", "PUT", "PATCH"].contains(method) {
            head += "Content-Length: \(body.count)\r\n"
        }
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            head += "\(name): \(value)\r\n"
        }
        head += "\r\n"
        return try send(raw: Array(head.utf8) + body, expectBody: method != "HEAD")
    }

    /// Sends a GET request.
    func get(_ path: String, headers: [String: String] = [:]) throws -> HTTPResponse {
        try request("GET", path, headers: headers)
    }

    /// Sends `object` serialized by `JSONSerialization` with `Content-Type: application/json`.
    func request(
        _ method: String,
        _ path: String,
        json object: Any,
        headers: [String: String] = [:]
    ) throws -> HTTPResponse {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.fragmentsAllowed])
        var headers = headers
        if !headers.keys.contains(where: { $0.lowercased() == "content-type" }) {
            headers["Content-Type"] = "application/json"
        }
        return try request(method, path, headers: headers, body: Array(data))
    }

    /// Sends a POST request with a JSON body.
    func post(_ path: String, json object: Any, headers: [String: String] = [:]) throws -> HTTPResponse {
        try request("POST", path, json: object, headers: headers)
    }

    /// Writes `bytes` as they are (for malformed requests), then reads the response until the
    /// server closes the connection.
    /// Throws `HTTPClientError` as `request` does.
    func send(raw bytes: [UInt8], expectBody: Bool = true) throws -> HTTPResponse {
        let deadline = Date().addingTimeInterval(timeout)
        let fd = try connectSocket()
        defer { close(fd) }
        try writeAll(fd, bytes)
        let raw = try readUntilClosed(fd, deadline: deadline)
        return try Self.parse(raw, expectBody: expectBody)
    }

    // MARK: - Socket

    private func connectSocket() throws -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw HTTPClientError.badAddress(host) }

        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPClientError.ioFailed(operation: "socket", errno: errno) }
        // Linux applies SO_SNDTIMEO to connect() as well.
        var interval = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))

        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if result != 0 {
            let code = errno
            close(fd)
            throw HTTPClientError.connectFailed(host: host, port: port, errno: code)
        }
        return fd
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                // The server may answer (e.g. 413) and close before reading everything we send.
                if errno == EPIPE || errno == ECONNRESET { return }
                throw HTTPClientError.ioFailed(operation: "send", errno: errno)
            }
            offset += written
        }
    }

    private func readUntilClosed(_ fd: Int32, deadline: Date) throws -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { throw HTTPClientError.timedOut(after: timeout, received: received.count) }
            var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pollfd, 1, Int32(min(remaining * 1000, Double(Int32.max)).rounded(.up)))
            if ready < 0 {
                if errno == EINTR { continue }
                throw HTTPClientError.ioFailed(operation: "poll", errno: errno)
            }
            if ready == 0 { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if count == 0 { return received }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                // A reset after a complete response (e.g. nginx closing early) still leaves a response.
                if errno == ECONNRESET, !received.isEmpty { return received }
                throw HTTPClientError.ioFailed(operation: "recv", errno: errno)
            }
            received.append(contentsOf: buffer[0..<count])
        }
    }

    // MARK: - Parsing

    static func parse(_ raw: [UInt8], expectBody: Bool = true) throws -> HTTPResponse {
        guard let headEnd = find([13, 10, 13, 10], in: raw, from: 0) else {
            throw HTTPClientError.malformedResponse("no end of headers in \(raw.count) bytes")
        }
        let lines = String(decoding: raw[0..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/"), let status = Int(statusParts[1]) else {
            throw HTTPClientError.malformedResponse("status line \"\(lines[0])\"")
        }
        var fields: [(name: String, value: String)] = []
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else {
                throw HTTPClientError.malformedResponse("header line \"\(line)\"")
            }
            let name = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            fields.append((name, value))
        }
        var response = HTTPResponse(
            status: status,
            reason: statusParts.count > 2 ? String(statusParts[2]) : "",
            headerFields: fields,
            body: []
        )
        let rest = Array(raw[(headEnd + 4)...])
        guard expectBody, status >= 200, status != 204, status != 304 else { return response }
        if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            response.body = try dechunk(rest)
        } else if let length = response.header("content-length").flatMap({ Int($0) }) {
            guard rest.count >= length else {
                throw HTTPClientError.malformedResponse("body has \(rest.count) of \(length) bytes")
            }
            response.body = Array(rest[0..<length])
        } else {
            response.body = rest
        }
        return response
    }

    private static func dechunk(_ data: [UInt8]) throws -> [UInt8] {
        var body: [UInt8] = []
        var position = 0
        while true {
            guard let lineEnd = find([13, 10], in: data, from: position) else {
                throw HTTPClientError.malformedResponse("truncated chunked body")
            }
            let sizeLine = String(decoding: data[position..<lineEnd], as: UTF8.self)
            let sizeText = sizeLine.split(separator: ";").first.map(String.init) ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw HTTPClientError.malformedResponse("chunk size \"\(sizeLine)\"")
            }
            position = lineEnd + 2
            if size == 0 { return body }
            guard position + size <= data.count else {
                throw HTTPClientError.malformedResponse("truncated chunk")
            }
            body.append(contentsOf: data[position..<(position + size)])
            position += size + 2
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0], Array(haystack[index..<(index + needle.count)]) == needle {
                return index
            }
            index += 1
        }
        return nil
    }
}
