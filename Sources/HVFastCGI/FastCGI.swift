import CFastCGI
import Glibc

/// The listening socket, opened by the master before it forks so that every worker accepts on it.
struct ListenSocket {
    let fd: Int32
    /// The socket file to unlink on stop; nil for TCP.
    let path: String?

    /// Opens `listen` with a backlog large enough for nginx's peak concurrency.
    ///
    /// - Throws: `SystemError` when the address is in use or cannot be bound.
    static func open(_ listen: Configuration.Listen, backlog: Int32 = 1024) throws -> ListenSocket {
        var path: String?
        if case .unix(let file) = listen {
            // A socket file nobody answers on is left over from a killed master; one that answers is in use.
            if let probe = try? streamSocket(listen, passive: false, what: "connect", { connect($0, $1, $2) }) {
                close(probe)
                throw SystemError("listen on \(file) (another hypervisord is serving it)", EADDRINUSE)
            }
            unlink(file)
            path = file
        }
        let fd = try streamSocket(listen, passive: true, what: "bind") { fd, address, length in
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            return bind(fd, address, length)
        }
        // nginx's workers run as another user; like php-fpm's listen.mode, let them connect.
        if let path { chmod(path, 0o666) }
        guard Glibc.listen(fd, backlog) == 0 else { throw SystemError("listen \(listen.address)", errno) }
        return ListenSocket(fd: fd, path: path)
    }

    /// Initializes libfcgi once, in the master before it forks. It installs handlers only for signals whose
    /// disposition is still the default, so the master's own handlers must already be in place.
    /// The corresponding libfcgi function is `FCGX_Init`.
    ///
    /// libfcgi lingers after each response, waiting for the web server to close first; with a connection per request
    /// that wait holds a worker for nothing. Workers read every request body to its end (`readBody`), so there is no
    /// unread input to reset the connection, and the linger is switched off unless the environment sets it.
    static func initializeLibrary() {
        setenv("LIBFCGI_OS_CLOSE_POLL_TIMEOUT", "0", 0)
        FCGX_Init()
    }

    /// Stops new connections from reaching the pool: the path disappears, queued connections stay.
    func unlinkPath() {
        if let path { unlink(path) }
    }
}

/// A stream socket to or for `listen` (a Unix socket path, or the first address `host:port` resolves to) on which
/// `use` (bind or connect) succeeded; `passive` resolves a host for binding.
///
/// - Throws: `SystemError` when the path does not fit, resolving, the socket or `use` (named by `what`) fails.
func streamSocket(
    _ listen: Configuration.Listen, passive: Bool, what: String,
    _ use: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
) throws -> Int32 {
    func open(_ family: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) throws -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno) }
        guard use(fd, address, length) == 0 else {
            let code = errno
            close(fd)
            throw SystemError("\(what) \(listen.address)", code)
        }
        return fd
    }
    switch listen {
    case .unix(let path):
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemError("socket path too long: \(path)", ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (i, byte) in bytes.enumerated() { buffer[i] = byte }
        }
        return try withUnsafePointer(to: &address) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try open(AF_UNIX, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    case .tcp(let host, let port):
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        if passive { hints.ai_flags = AI_PASSIVE }
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw SystemError("resolve \(host)", EINVAL)
        }
        defer { freeaddrinfo(result) }
        return try open(info.pointee.ai_family, info.pointee.ai_addr, info.pointee.ai_addrlen)
    }
}

/// One FastCGI connection at a time on the shared listening socket.
///
/// The worker calls `accept(2)` itself so that SIGQUIT can interrupt an idle worker, then hands the
/// connection to libfcgi, which reads the request's records.
final class FastCGIConnection {
    enum Accepted { case request, interrupted, failed(Int32) }

    private let request: UnsafeMutablePointer<FCGX_Request>
    private let listenFD: Int32

    /// The corresponding libfcgi function is `FCGX_InitRequest`.
    init(listenFD: Int32) {
        self.listenFD = listenFD
        request = .allocate(capacity: 1)
        FCGX_InitRequest(request, listenFD, Int32(FCGI_FAIL_ACCEPT_ON_INTR))
    }

    deinit {
        FCGX_Finish_r(request)
        request.deallocate()
    }

    /// Finishes the previous request, waits for the next connection and reads its parameters.
    ///
    /// Returns `.interrupted` when a signal arrived while idle. The corresponding libfcgi function is `FCGX_Accept_r`.
    func accept(blockSignals: () -> Void) -> Accepted {
        FCGX_Finish_r(request)
        if request.pointee.ipcFd < 0 {
            let fd = Glibc.accept(listenFD, nil, nil)
            blockSignals()
            guard fd >= 0 else { return errno == EINTR ? .interrupted : .failed(errno) }
            request.pointee.ipcFd = fd
            // Makes FCGX_Accept_r take this connection instead of accepting one itself.
            request.pointee.keepConnection = 1
        } else {
            blockSignals()
        }
        let status = FCGX_Accept_r(request)
        if status < 0 { return status == -EINTR ? .interrupted : .failed(-status) }
        return .request
    }

    /// Whether a connection is waiting in the backlog right now.
    func hasQueuedConnection() -> Bool {
        var entry = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLIN) != 0
    }

    /// A FastCGI parameter of the current request. The corresponding libfcgi function is `FCGX_GetParam`.
    func parameter(_ name: String) -> String? {
        guard let value = FCGX_GetParam(name, request.pointee.envp) else { return nil }
        return String(cString: value)
    }

    /// Reads the request body to its end, keeping at most `limit` bytes.
    ///
    /// Reading to the end matters even for refused bodies: unread input makes the close reset the
    /// connection, and nginx may lose the response. Returns nil when the body was longer than `limit`.
    /// The corresponding libfcgi function is `FCGX_GetStr`.
    func readBody(limit: Int, expected: Int) -> [UInt8]? {
        var body: [UInt8] = []
        body.reserveCapacity(min(expected, limit))
        var chunk = [CChar](repeating: 0, count: 16384)
        var total = 0
        while true {
            let n = FCGX_GetStr(&chunk, Int32(chunk.count), request.pointee.in)
            if n <= 0 { break }
            total += Int(n)
            if total <= limit {
                chunk.withUnsafeBytes { body.append(contentsOf: $0.prefix(Int(n))) }
            }
        }
        return total <= limit ? body : nil
    }

    /// Buffers the whole CGI response (status line, headers, body); `finish` sends it with the end-of-request record
    /// in one write.
    ///
    /// Returns false when the web server went away. The corresponding libfcgi function is `FCGX_PutStr`.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        let written = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                FCGX_PutStr($0.baseAddress, Int32($0.count), request.pointee.out)
            }
        }
        return written == Int32(bytes.count)
    }

    /// Ends the current request and closes its connection. The corresponding libfcgi function is `FCGX_Finish_r`.
    func finish() { FCGX_Finish_r(request) }
}
