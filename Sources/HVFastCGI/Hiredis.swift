import CHiredis
import Glibc

/// A failed Redis call.
enum RedisError: Error, CustomStringConvertible {
    /// Not connected, or the connection broke; the caller degrades.
    case unavailable(String)
    /// Redis answered with an error reply.
    case reply(String)

    var description: String {
        switch self {
        case .unavailable(let reason): "Redis unavailable: \(reason)"
        case .reply(let message): "Redis error: \(message)"
        }
    }
}

/// A Lua script and its SHA-1, computed once, so that every call sends the digest (`EVALSHA`), not the text.
struct RedisScript: Sendable {
    let source: String
    let digest: String

    init(_ source: String) {
        self.source = source
        digest = sha1Hex(source)
    }
}

/// A Redis reply, converted from hiredis's `redisReply`.
enum RedisReply: Equatable {
    case string(String)
    case integer(Int64)
    case array([RedisReply])
    case status(String)
    case null

    var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }
}

/// One hiredis connection, opened lazily and reopened at most once per back-off period.
///
/// Redis being down must never fail a request that does not need it, so nothing connects until a command runs,
/// and commands time out quickly.
final class RedisConnection {
    private let endpoint: Configuration.RedisEndpoint
    private let database: Int
    private var context: UnsafeMutablePointer<redisContext>?
    private var nextAttempt: Double = 0
    private let timeout = timeval(tv_sec: 0, tv_usec: 250_000)

    init(endpoint: Configuration.RedisEndpoint, database: Int) {
        self.endpoint = endpoint
        self.database = database
    }

    deinit { redisFree(context) }

    /// Sends one command and waits for its reply.
    ///
    /// - Throws: `RedisError.unavailable` when Redis cannot be reached, `.reply` for an error reply.
    func command(_ arguments: [String]) throws(RedisError) -> RedisReply {
        try pipeline([arguments])[0].get()
    }

    /// Sends several commands in one round trip and returns each one's reply, or its error reply.
    ///
    /// - Throws: `RedisError.unavailable` when Redis cannot be reached.
    /// The corresponding hiredis functions are `redisAppendCommandArgv` and `redisGetReply`.
    func pipeline(_ commands: [[String]]) throws(RedisError) -> [Result<RedisReply, RedisError>] {
        // A connection made before a Redis restart fails on first use: retry once on a fresh one.
        let reused = context != nil
        do {
            return try send(commands, on: try connected())
        } catch .unavailable where reused {
            nextAttempt = 0
            return try send(commands, on: try connected())
        }
    }

    private func send(_ commands: [[String]], on context: UnsafeMutablePointer<redisContext>) throws(RedisError)
        -> [Result<RedisReply, RedisError>]
    {
        for arguments in commands {
            // Exact byte copies: an argument may hold any bytes, including NUL.
            let copies = arguments.map { argument -> UnsafeMutablePointer<CChar> in
                let bytes = Array(argument.utf8)
                let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
                bytes.withUnsafeBytes { source in
                    if let base = source.baseAddress {
                        UnsafeMutableRawPointer(copy).copyMemory(from: base, byteCount: source.count)
                    }
                }
                return copy
            }
            defer { for copy in copies { copy.deallocate() } }
            let lengths = arguments.map { $0.utf8.count }
            var pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
            let appended = pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { argvlen in
                    redisAppendCommandArgv(context, Int32(arguments.count), argv.baseAddress, argvlen.baseAddress)
                }
            }
            guard appended == REDIS_OK else { throw failure(of: context) }
        }
        var replies: [Result<RedisReply, RedisError>] = []
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else { throw failure(of: context) }
            defer { freeReplyObject(raw) }
            do {
                replies.append(
                    .success(try RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self).pointee)))
            } catch {
                replies.append(.failure(error))
            }
        }
        return replies
    }

    /// The context's error, after which it is closed.
    private func failure(of context: UnsafeMutablePointer<redisContext>) -> RedisError {
        let reason = withUnsafeBytes(of: context.pointee.errstr) { buffer in
            String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
        }
        disconnect()
        return .unavailable(reason)
    }

    /// Runs a Lua script by its digest, loading it first when Redis does not have it (after a restart, say).
    ///
    /// - Throws: `RedisError`.
    func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) throws(RedisError) -> RedisReply {
        try evaluate(script, calls: [(keys, arguments)])[0].get()
    }

    /// Runs a Lua script once per call in one round trip, loading it first when Redis does not have it, and returns
    /// each call's reply, or its error reply.
    ///
    /// - Throws: `RedisError.unavailable` when Redis cannot be reached.
    func evaluate(_ script: RedisScript, calls: [(keys: [String], arguments: [String])]) throws(RedisError) -> [Result<
        RedisReply, RedisError
    >] {
        let evaluations = calls.map { ["EVALSHA", script.digest, String($0.keys.count)] + $0.keys + $0.arguments }
        var replies = try pipeline(evaluations)
        let unknown = replies.indices.filter {
            if case .failure(.reply(let message)) = replies[$0] { message.hasPrefix("NOSCRIPT") } else { false }
        }
        guard !unknown.isEmpty else { return replies }
        // Redis has not seen the script since it started: load it once, then run those calls by digest again.
        guard try command(["SCRIPT", "LOAD", script.source]) == .string(script.digest) else {
            throw .reply("SCRIPT LOAD named the script differently than its SHA-1")
        }
        for (index, reply) in zip(unknown, try pipeline(unknown.map { evaluations[$0] })) { replies[index] = reply }
        return replies
    }

    /// Whether Redis answers PING now.
    func ping() -> Bool {
        (try? command(["PING"])) == .status("PONG")
    }

    private static func convert(_ reply: redisReply) throws(RedisError) -> RedisReply {
        switch reply.type {
        case REDIS_REPLY_STRING: return .string(text(reply))
        case REDIS_REPLY_STATUS: return .status(text(reply))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ERROR: throw .reply(text(reply))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            for i in 0..<Int(reply.elements) {
                guard let element = reply.element[i] else { continue }
                elements.append(try convert(element.pointee))
            }
            return .array(elements)
        default: return .null
        }
    }

    private static func text(_ reply: redisReply) -> String {
        guard let bytes = reply.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: Int(reply.len)), as: UTF8.self)
    }

    /// The corresponding hiredis functions are `redisConnectWithTimeout` and `redisConnectUnixWithTimeout`.
    private func connected() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        if let context { return context }
        let now = monotonicSeconds()
        guard now >= nextAttempt else { throw .unavailable("reconnect backing off") }
        nextAttempt = now + 1
        let fresh: UnsafeMutablePointer<redisContext>?
        switch endpoint {
        case .tcp(let host, let port): fresh = redisConnectWithTimeout(host, Int32(port), timeout)
        case .unix(let path): fresh = redisConnectUnixWithTimeout(path, timeout)
        }
        guard let fresh, fresh.pointee.err == 0 else {
            redisFree(fresh)
            throw .unavailable("cannot connect")
        }
        redisSetTimeout(fresh, timeout)
        context = fresh
        if database != 0 {
            do {
                _ = try command(["SELECT", String(database)])
            } catch {
                disconnect()
                throw error
            }
        }
        return fresh
    }

    private func disconnect() {
        redisFree(context)
        context = nil
    }
}
