import Glibc

/// Just enough of a FastCGI client (the responder role) for `hvctl` to ask hypervisord for a page on its socket, the
/// way nginx does: one request per connection, from the loopback address.
enum FastCGIClient {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The body of `GET path`; throws unless the answer is a `200`.
    static func get(_ path: String, from listen: Configuration.Listen) throws -> String {
        let fd = try connect(listen)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var parameters: [UInt8] = []
        for (name, value) in [
            ("REQUEST_METHOD", "GET"), ("REQUEST_URI", path), ("DOCUMENT_URI", path), ("QUERY_STRING", ""),
            ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "127.0.0.1"), ("CONTENT_LENGTH", "0"),
        ] {
            parameters += length(name.utf8.count) + length(value.utf8.count) + Array(name.utf8) + Array(value.utf8)
        }
        let request =
            record(beginRequest, [0, responderRole, 0, 0, 0, 0, 0, 0]) + record(params, parameters)
            + record(params, []) + record(stdin, [])
        guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else {
            throw Failure(description: "cannot send the request (\(String(cString: strerror(errno))))")
        }
        var output: [UInt8] = []
        var header = [UInt8](repeating: 0, count: 8)
        while true {
            try readFully(fd, &header)
            var content = [UInt8](repeating: 0, count: Int(header[4]) << 8 | Int(header[5]))
            var padding = [UInt8](repeating: 0, count: Int(header[6]))
            try readFully(fd, &content)
            try readFully(fd, &padding)
            if header[1] == endRequest { break }
            if header[1] == stdout { output += content }
        }
        // A CGI response: headers, a blank line, the body.
        let text = String(decoding: output, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw Failure(description: "malformed response") }
        let status = text[..<split.lowerBound].split(separator: "\r\n").first { $0.hasPrefix("Status: ") }
        guard status?.hasPrefix("Status: 200") == true else {
            throw Failure(description: "answered \(status.map { String($0.dropFirst(8)) } ?? "without a status")")
        }
        return String(text[split.upperBound...])
    }

    private static let beginRequest: UInt8 = 1
    private static let endRequest: UInt8 = 3
    private static let params: UInt8 = 4
    private static let stdin: UInt8 = 5
    private static let stdout: UInt8 = 6
    private static let responderRole: UInt8 = 1

    /// One record of request 1 (contents here are always under 64 KiB).
    private static func record(_ type: UInt8, _ content: [UInt8]) -> [UInt8] {
        [1, type, 0, 1, UInt8(content.count >> 8), UInt8(content.count & 0xFF), 0, 0] + content
    }

    /// A name-value pair's length: one byte below 128, else four with the high bit set.
    private static func length(_ count: Int) -> [UInt8] {
        count < 128
            ? [UInt8(count)]
            : [
                UInt8((count >> 24) | 0x80), UInt8((count >> 16) & 0xFF), UInt8((count >> 8) & 0xFF),
                UInt8(count & 0xFF),
            ]
    }

    private static func readFully(_ fd: Int32, _ buffer: inout [UInt8]) throws {
        var done = 0
        while done < buffer.count {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, $0.count - done, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw Failure(
                    description: count == 0
                        ? "the connection closed early" : "no answer (\(String(cString: strerror(errno))))")
            }
            done += count
        }
    }

    private static func connect(_ listen: Configuration.Listen) throws -> Int32 {
        try streamSocket(listen, passive: false, what: "connect") { Glibc.connect($0, $1, $2) }
    }
}
