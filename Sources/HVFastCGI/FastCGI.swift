import CFastCGI
import CSystem
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
        // Workers wait in `epoll` and take connections with an `accept` that must never block (`Listener`).
        guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 else {
            throw SystemError("listen \(listen.address) without blocking", errno)
        }
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

/// A worker's side of the shared listening socket, which the master made non-blocking.
///
/// A worker takes a connection with an `accept` that fails with `EAGAIN` instead of blocking when none is waiting
/// (or another worker was faster), and only then waits in `epoll` with `EPOLLEXCLUSIVE`, so that a connection wakes
/// one idle worker as a blocking `accept` did and SIGQUIT can interrupt the wait. So a busy worker can also take the
/// connections already waiting (`takeWaiting`) without ever blocking.
final class Listener {
    let fd: Int32
    private let epoll: Int32

    /// - Throws: `SystemError` when the epoll instance cannot be made.
    init(fd: Int32) throws {
        self.fd = fd
        epoll = hv_exclusive_epoll(fd)
        guard epoll >= 0 else { throw SystemError("epoll", errno) }
    }

    deinit { close(epoll) }

    /// Takes a connection, waiting for one when none is waiting: its descriptor, or `-errno` (`-EINTR` when a signal
    /// ended the wait). `blockSignals` runs as soon as it has one or the wait ends. A busy pool finds one waiting: one
    /// `accept`, as before the socket was non-blocking.
    func accept(blockSignals: () -> Void) -> Int32 {
        while true {
            if let fd = takeWaiting() {
                blockSignals()
                return fd
            }
            let code = errno
            guard code == EAGAIN || code == EWOULDBLOCK || code == EINTR else {
                blockSignals()
                return -code
            }
            if hv_epoll_wait(epoll) < 0 {
                let code = errno
                blockSignals()
                return -code
            }
        }
    }

    /// A connection already waiting in the backlog, without blocking; nil when there is none.
    func takeWaiting() -> Int32? {
        let fd = Glibc.accept(self.fd, nil, nil)
        return fd >= 0 ? fd : nil
    }
}

/// One FastCGI request at a time on a connection taken from the `Listener`.
///
/// The worker takes connections itself so that SIGQUIT can interrupt an idle worker and so that it can take those
/// already waiting, then hands each to libfcgi, which reads the request's records.
final class FastCGIConnection {
    enum Accepted { case request, interrupted, missed, failed(Int32) }

    private let request: UnsafeMutablePointer<FCGX_Request>
    private let listener: Listener
    /// Whether a connection nginx asks to keep (`fastcgi_keep_conn on`) is kept for its next request. Only the
    /// worker's first connection waits for one; the others, which take connections already waiting, close theirs.
    private let keepsConnections: Bool

    /// The corresponding libfcgi function is `FCGX_InitRequest`.
    init(listener: Listener, keepsConnections: Bool) {
        self.listener = listener
        self.keepsConnections = keepsConnections
        request = .allocate(capacity: 1)
        FCGX_InitRequest(request, listener.fd, Int32(FCGI_FAIL_ACCEPT_ON_INTR))
    }

    deinit {
        finish()
        request.deallocate()
    }

    /// Finishes the previous request, waits for the next one and reads its parameters.
    ///
    /// Returns `.interrupted` when a signal arrived while idle, `.missed` when the connection ended before its
    /// request came.
    func accept(blockSignals: () -> Void) -> Accepted {
        finish()
        if request.pointee.ipcFd >= 0 {
            // nginx kept the connection: its next request comes on it.
            blockSignals()
            return read()
        }
        let fd = listener.accept(blockSignals: blockSignals)
        if fd >= 0 { return adopt(fd) }
        return fd == -EINTR ? .interrupted : .failed(-fd)
    }

    /// Finishes the previous request and takes a connection already waiting, if there is one; whether it read a
    /// request from it.
    func acceptWaiting() -> Bool {
        finish()
        guard let fd = listener.takeWaiting() else { return false }
        if case .request = adopt(fd) { return true }
        return false
    }

    private func adopt(_ fd: Int32) -> Accepted {
        request.pointee.ipcFd = fd
        // Makes FCGX_Accept_r take this connection instead of accepting one itself.
        request.pointee.keepConnection = 1
        return read()
    }

    /// Reads the request's parameters; `.missed` when the connection ended before a request could be read (libfcgi
    /// has closed it). The corresponding libfcgi function is `FCGX_Accept_r`.
    private func read() -> Accepted {
        let status = FCGX_Accept_r(request)
        if status < 0 { return status == -EINTR ? .interrupted : .missed }
        return .request
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

    /// Ends the current request and closes its connection unless nginx asked to keep it and this connection keeps
    /// them. The corresponding libfcgi function is `FCGX_Finish_r`.
    func finish() {
        if !keepsConnections { request.pointee.keepConnection = 0 }
        FCGX_Finish_r(request)
    }
}
