import Glibc

/// One logfmt line per event, written with a single `write(2)` on an `O_APPEND` descriptor so lines from
/// the master and every worker never interleave.
///
/// The file is reopened on SIGUSR1, so logrotate can move it away and the service continues at the old path.
final class Log {
    typealias Level = Configuration.LogLevel

    private var path: String?
    private var fd: Int32
    private var minimum: Level
    /// Who is speaking: `master` or `worker`.
    private var role: String
    private var pid: Int32

    init(path: String?, level: Level, role: String) {
        self.path = path
        self.minimum = level
        self.role = role
        self.pid = getpid()
        self.fd = 2
        reopen()
    }

    deinit { if fd > 2 { close(fd) } }

    /// Called in a forked child: the descriptor is shared, the speaker is not.
    func adopt(role: String) {
        self.role = role
        pid = getpid()
    }

    /// Applies a reloaded configuration's log settings.
    func retarget(path: String?, level: Level) {
        minimum = level
        guard path != self.path else { return }
        self.path = path
        if path == nil, fd > 2 {
            close(fd)
            fd = 2
        }
        reopen()
    }

    /// Opens the file again at its path (creating it if logrotate moved it away).
    func reopen() {
        guard let path else { return }
        let newFD = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard newFD >= 0 else {
            write(.error, "cannot open log file", ["path": path, "errno": String(errno)])
            return
        }
        if fd > 2 { close(fd) }
        fd = newFD
    }

    func isEnabled(_ level: Level) -> Bool { level >= minimum }

    func info(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.info, message, fields) }
    func warning(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) {
        write(.warning, message, fields)
    }
    func error(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.error, message, fields) }

    func write(_ level: Level, _ message: String, _ fields: KeyValuePairs<String, String>) {
        guard level >= minimum else { return }
        var line = "time=" + Log.timestamp() + " level=" + Log.name(level) + " " + role + "=" + String(pid)
        line += " msg=" + Log.quoted(message)
        for (key, value) in fields {
            line += " " + key + "=" + Log.quoted(value)
        }
        line += "\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    private static func name(_ level: Level) -> String {
        switch level {
        case .debug: "debug"
        case .info: "info"
        case .warning: "warning"
        case .error: "error"
        }
    }

    /// logfmt quoting: bare when safe, else double-quoted with escapes; control characters never reach the file.
    static func quoted(_ value: String) -> String {
        var needsQuotes = value.isEmpty
        for byte in value.utf8
        where byte <= 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "=")
            || byte == UInt8(ascii: "\\") || byte == 0x7F
        {
            needsQuotes = true
            break
        }
        guard needsQuotes else { return value }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\x" + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// RFC 3339 UTC with milliseconds.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "."
            + pad(Int32(now.tv_nsec / 1_000_000), 3) + "Z"
    }
}

/// Seconds on the monotonic clock, for durations and deadlines.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
