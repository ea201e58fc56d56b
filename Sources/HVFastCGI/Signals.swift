import Glibc

// The only global state: what signal handlers record. Handlers do nothing else.
nonisolated(unsafe) private var selfPipeWriteFD: Int32 = -1
nonisolated(unsafe) private var workerQuitRequested: sig_atomic_t = 0
nonisolated(unsafe) private var workerReopenRequested: sig_atomic_t = 0

/// Installs `handler` for `signal` with `sigaction`; `restart` sets `SA_RESTART`.
private func installHandler(_ signal: Int32, restart: Bool, _ handler: @convention(c) (Int32) -> Void) {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = handler
    action.sa_flags = restart ? SA_RESTART : 0
    sigemptyset(&action.sa_mask)
    sigaction(signal, &action, nil)
}

private func setDisposition(_ signal: Int32, _ disposition: __sighandler_t?) {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = disposition
    sigemptyset(&action.sa_mask)
    sigaction(signal, &action, nil)
}

/// The master's signals, delivered through a self-pipe so the supervisor loop sees them as readable bytes.
final class SignalPipe {
    let readFD: Int32
    private let writeFD: Int32
    static let handled: [Int32] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD]

    /// - Throws: `SystemError` when the pipe cannot be made.
    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SystemError("pipe", errno) }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        readFD = fds[0]
        writeFD = fds[1]
        selfPipeWriteFD = writeFD
        for signal in SignalPipe.handled {
            installHandler(signal, restart: true) { signal in
                let saved = errno
                var byte = UInt8(truncatingIfNeeded: signal)
                _ = write(selfPipeWriteFD, &byte, 1)
                errno = saved
            }
        }
        setDisposition(SIGPIPE, SIG_IGN)
    }

    /// Waits up to `timeout` seconds and returns the signals that arrived, in order.
    func wait(timeout: Double) -> [Int32] {
        var entry = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, Int32(timeout * 1000))
        var signals: [Int32] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            let n = read(readFD, &buffer, buffer.count)
            if n <= 0 { break }
            signals += buffer[0..<n].map { Int32($0) }
        }
        return signals
    }

    /// In a freshly forked worker: the master's handlers and pipe are not the worker's.
    func closeInChild() {
        close(readFD)
        close(writeFD)
        for signal in SignalPipe.handled { setDisposition(signal, SIG_DFL) }
    }
}

/// The worker's signals: SIGQUIT asks it to finish and exit, SIGUSR1 to reopen its log.
///
/// Both are blocked while a request is processed (libfcgi does not retry reads and writes interrupted by a
/// signal) and unblocked while idle in `accept`, which they interrupt because their handlers lack `SA_RESTART`.
enum WorkerSignals {
    static func install() {
        installHandler(SIGQUIT, restart: false) { _ in workerQuitRequested = 1 }
        installHandler(SIGUSR1, restart: false) { _ in workerReopenRequested = 1 }
        // Only ends a wait at the `AcceptGate` (its timer is armed for nothing else).
        installHandler(SIGALRM, restart: false) { _ in }
        setDisposition(SIGTERM, SIG_DFL)
        // Ctrl-C reaches the whole process group; the master decides how workers stop.
        setDisposition(SIGINT, SIG_IGN)
        setDisposition(SIGHUP, SIG_IGN)
        setDisposition(SIGPIPE, SIG_IGN)
    }

    private static let deferred: sigset_t = {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGQUIT)
        sigaddset(&set, SIGUSR1)
        return set
    }()

    static func block() {
        var set = deferred
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func unblock() {
        var set = deferred
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    static var quitRequested: Bool { workerQuitRequested != 0 }

    /// Whether SIGUSR1 arrived since the last call.
    static func takeReopenRequest() -> Bool {
        guard workerReopenRequested != 0 else { return false }
        workerReopenRequested = 0
        return true
    }
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
func send(_ signal: WorkerSignal, to pid: Int32) {
    let number: Int32
    switch signal {
    case .quit: number = SIGQUIT
    case .terminate: number = SIGTERM
    case .kill: number = SIGKILL
    case .reopenLogs: number = SIGUSR1
    }
    kill(pid, number)
}
