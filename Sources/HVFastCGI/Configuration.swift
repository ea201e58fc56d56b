import Glibc

/// Everything `hypervisord` reads at start-up (and again on SIGHUP), one field per `.env.example` key.
///
/// Values come from the environment first, then from `.env` in the working directory.
struct Configuration: Equatable, Sendable {
    enum LogLevel: Int, Comparable, Sendable {
        case debug, info, warning, error
        static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    }
    /// Where the FastCGI socket listens.
    enum Listen: Equatable, Sendable {
        case unix(path: String)
        case tcp(host: String, port: Int)

        /// The path, or `host:port`, for messages.
        var address: String {
            switch self {
            case .unix(let path): path
            case .tcp(let host, let port): "\(host):\(port)"
            }
        }
    }
    /// Where Redis is: a host and port, or a unix socket path.
    enum RedisEndpoint: Equatable, Sendable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    /// HMAC key for the HS* algorithms; at least 32 bytes.
    var jwtSecret: [UInt8]
    var jwtAlgorithm: JWTAlgorithm = .hs256
    var accessTokenLifetimeSeconds: Int64 = 30 * 60
    /// libpq connection URI.
    var databaseURL: String
    var redis: RedisEndpoint
    var redisDatabase: Int = 0
    var workers: Int
    /// How many workers take requests at once (`AcceptGate`); `workers` or more lets all of them.
    var acceptingWorkers: Int
    /// Recycle a worker after this many requests; 0 means never.
    var maxRequests: Int = 10_000
    var requestTimeoutSeconds: Int = 30
    var slowRequestMilliseconds: Int = 500
    var listen: Listen
    /// nil logs to stderr.
    var logFile: String?
    var logLevel: LogLevel = .info
    var stateDirectory: String
    /// Test-only knob: log2 of scrypt's N. Never lowered unless `HV_TEST_SCRYPT_LOG_N` is set.
    var scryptLogN: Int?

    /// A configuration value that cannot be used; the message names the variable and the value.
    struct Invalid: Error, Equatable, CustomStringConvertible {
        let description: String
        init(_ key: String, _ requirement: String, _ value: String) {
            description = "\(key) \(requirement) (got \"\(value)\")"
        }
        init(missing key: String, _ requirement: String) { description = "\(key) \(requirement) (not set)" }
    }

    /// Parses the merged variables.
    ///
    /// - Throws: `Invalid` naming the first variable whose value cannot be used.
    static func parse(_ env: [String: String], cpuCount: Int) throws(Invalid) -> Configuration {
        func value(_ key: String) -> String? {
            guard let raw = env[key], !raw.isEmpty else { return nil }
            return raw
        }
        func integer(_ key: String, default fallback: Int, range: ClosedRange<Int>, what: String) throws(Invalid) -> Int
        {
            guard let raw = value(key) else { return fallback }
            guard let number = Int(raw), range.contains(number) else { throw Invalid(key, what, raw) }
            return number
        }

        let stateDirectory = value("HV_STATE_DIR") ?? "./var"

        let algorithmRaw = value("JWT_ALGORITHM") ?? "HS256"
        guard let algorithm = JWTAlgorithm(rawValue: algorithmRaw) else {
            throw Invalid("JWT_ALGORITHM", "must be HS256, HS384 or HS512", algorithmRaw)
        }
        // RFC 7518 §3.2: an HMAC key at least as long as the hash output.
        let minimumSecret = ["HS256": 32, "HS384": 48, "HS512": 64][algorithmRaw] ?? 32
        guard let secret = value("JWT_SECRET_KEY") else {
            throw Invalid(missing: "JWT_SECRET_KEY", "must be set to at least \(minimumSecret) bytes")
        }
        guard secret.utf8.count >= minimumSecret else {
            throw Invalid(
                "JWT_SECRET_KEY", "must be at least \(minimumSecret) bytes for \(algorithmRaw)",
                "<\(secret.utf8.count) bytes>")
        }
        let minutes = try integer(
            "ACCESS_TOKEN_EXPIRE_MINUTES", default: 30, range: 1...525_600, what: "must be minutes between 1 and 525600"
        )

        let databaseURL = try databaseURL(env, value: value, stateDirectory: stateDirectory)

        let redisPort = try integer("REDIS_PORT", default: 6379, range: 1...65535, what: "must be a TCP port")
        let redis: RedisEndpoint
        if let host = value("REDIS_HOST") {
            redis = host.hasPrefix("/") ? .unix(path: host) : .tcp(host: host, port: redisPort)
        } else {
            redis = .unix(path: stateDirectory + "/run/redis.sock")
        }
        let redisDatabase = try integer(
            "REDIS_DATABASE_INDEX", default: 0, range: 0...1024, what: "must be a database index (0-1024)")

        let workers = try integer(
            "HV_WORKERS", default: max(1, cpuCount) * 4, range: 1...512, what: "must be a positive integer (1-512)")
        let acceptingWorkers = try integer(
            "HV_ACCEPTING_WORKERS", default: max(1, cpuCount), range: 1...512,
            what: "must be a positive integer (1-512)")
        let maxRequests = try integer(
            "HV_MAX_REQUESTS", default: 10_000, range: 0...Int(Int32.max), what: "must be a non-negative integer")
        let timeout = try integer(
            "HV_REQUEST_TIMEOUT", default: 30, range: 1...86_400, what: "must be seconds between 1 and 86400")
        let slow = try integer(
            "HV_SLOW_REQUEST_MS", default: 500, range: 1...3_600_000, what: "must be a positive number of milliseconds")
        let listen = try parseListen(value("HV_LISTEN") ?? stateDirectory + "/run/hypervisor.sock")

        let levelRaw = value("HV_LOG_LEVEL") ?? "info"
        let level: LogLevel
        switch levelRaw.lowercased() {
        case "debug": level = .debug
        case "info": level = .info
        case "warning", "warn": level = .warning
        case "error": level = .error
        default: throw Invalid("HV_LOG_LEVEL", "must be debug, info, warning or error", levelRaw)
        }
        var scryptLogN: Int?
        if let raw = value("HV_TEST_SCRYPT_LOG_N") {
            guard let n = Int(raw), (1...17).contains(n) else {
                throw Invalid("HV_TEST_SCRYPT_LOG_N", "must be an integer between 1 and 17", raw)
            }
            scryptLogN = n
        }

        return Configuration(
            jwtSecret: Array(secret.utf8), jwtAlgorithm: algorithm, accessTokenLifetimeSeconds: Int64(minutes) * 60,
            databaseURL: databaseURL, redis: redis, redisDatabase: redisDatabase, workers: workers,
            acceptingWorkers: acceptingWorkers,
            maxRequests: maxRequests, requestTimeoutSeconds: timeout, slowRequestMilliseconds: slow, listen: listen,
            logFile: value("HV_LOG_FILE"), logLevel: level, stateDirectory: stateDirectory, scryptLogN: scryptLogN)
    }

    /// `SQL_DB_URL` wins; else a URL from the `POSTGRES_*` parts; else the private cluster's socket.
    private static func databaseURL(
        _ env: [String: String], value: (String) -> String?, stateDirectory: String
    ) throws(Invalid) -> String {
        if let url = value("SQL_DB_URL") {
            // The seed's URLs name SQLAlchemy drivers ("postgresql+psycopg2://"); libpq wants the bare scheme.
            var normalized = url
            if let plus = url.firstIndex(of: "+"), let colon = url.firstIndex(of: ":"), plus < colon,
                url.hasPrefix("postgres")
            {
                normalized = String(url[..<plus]) + String(url[colon...])
            }
            guard normalized.hasPrefix("postgresql://") || normalized.hasPrefix("postgres://") else {
                throw Invalid("SQL_DB_URL", "must be a postgresql:// URL", "<redacted>")
            }
            return normalized
        }
        if let user = value("POSTGRES_USER") {
            let host = value("POSTGRES_HOST") ?? "localhost"
            let port = value("POSTGRES_PORT") ?? "5432"
            guard let portNumber = Int(port), (1...65535).contains(portNumber) else {
                throw Invalid("POSTGRES_PORT", "must be a TCP port", port)
            }
            let database = value("POSTGRES_DB") ?? user
            var url = "postgresql://\(percentEncode(user))"
            if let password = value("POSTGRES_PASSWORD") { url += ":" + percentEncode(password) }
            url += "@\(host):\(portNumber)/\(percentEncode(database))"
            return url
        }
        return "postgresql:///hypervisor?host=\(percentEncode(absolute(stateDirectory) + "/run"))"
    }

    private static func parseListen(_ raw: String) throws(Invalid) -> Listen {
        if raw.contains("/") {
            guard raw.utf8.count < 108 else {
                throw Invalid("HV_LISTEN", "must be a unix socket path shorter than 108 bytes", raw)
            }
            return .unix(path: raw)
        }
        guard let colon = raw.lastIndex(of: ":"), let port = Int(raw[raw.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            throw Invalid("HV_LISTEN", "must be a unix socket path or host:port", raw)
        }
        var host = String(raw[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    private static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"), UInt8(ascii: "/"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    private static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        guard let raw = getcwd(nil, 0) else { return path }
        defer { free(raw) }
        let cwd = String(cString: raw)
        return cwd + "/" + (path.hasPrefix("./") ? String(path.dropFirst(2)) : path)
    }
}

extension Configuration {
    /// The process environment merged over the variables of `.env` in `directory` (the environment wins).
    static func environment(dotEnvDirectory directory: String = ".") -> [String: String] {
        var merged = DotEnv.parse(readFile(directory + "/.env") ?? "")
        var cursor = environ
        while let entry = cursor.pointee {
            let pair = String(cString: entry)
            if let eq = pair.firstIndex(of: "=") {
                merged[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            cursor += 1
        }
        return merged
    }

    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The `.env` format: `KEY=value` lines, `#` comments, optional `export `, optional single or double quotes.
enum DotEnv {
    static func parse(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            var line = Substring(rawLine).drop(while: { $0 == " " || $0 == "\t" })
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("export ") { line = line.dropFirst(7) }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingSpaces()
            var value = line[line.index(after: eq)...].trimmingSpaces()
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = value.dropFirst().dropLast()
            } else if let hash = value.indices.first(where: {
                value[$0] == "#" && $0 > value.startIndex && value[value.index(before: $0)] == " "
            }) {
                value = value[..<hash].trimmingSpaces()
            }
            if !key.isEmpty { result[String(key)] = String(value) }
        }
        return result
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}
