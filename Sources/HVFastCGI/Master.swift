import CSystem
import Glibc

/// The prefork master: it owns the listening socket and the scoreboard, forks workers and carries out the
/// `Supervisor`'s decisions. It stays single-threaded and holds no database or Redis connection, so forking is safe.
final class Master {
    private var configuration: Configuration
    private let log: Log
    private let listenSocket: ListenSocket
    private let signals: SignalPipe
    private let scoreboard: Scoreboard
    /// The file whose bytes are the `AcceptGate`'s places.
    private let acceptGateFile: Int32
    private var supervisor: Supervisor
    private var slots: [Int32: Int] = [:]
    private let pidFile: String?
    private let openAPI: [UInt8]
    private var exitCode: Int32?

    /// Master setup: signal pipe, migrations, listening socket, pid file.
    ///
    /// - Throws: when the socket cannot be opened, the pid file belongs to a running master, or migration fails.
    init(configuration: Configuration, log: Log, pidFile: String?) throws {
        self.configuration = configuration
        self.log = log
        self.pidFile = pidFile
        openAPI = try OpenAPI.load()
        signals = try SignalPipe()
        ListenSocket.initializeLibrary()
        scoreboard = try Scoreboard()
        acceptGateFile = hv_anonymous_file("hypervisord-accept-gate")
        guard acceptGateFile >= 0 else { throw SystemError("memfd_create", errno) }
        supervisor = Supervisor(policy: Master.policy(configuration))
        if let pidFile { try Master.claimPIDFile(pidFile) }
        do {
            try Master.migrate(configuration, log: log, signals: signals)
            listenSocket = try ListenSocket.open(configuration.listen)
        } catch {
            if let pidFile { unlink(pidFile) }
            throw error
        }
    }

    static func policy(_ configuration: Configuration) -> Supervisor.Policy {
        Supervisor.Policy(workers: configuration.workers, requestTimeout: Double(configuration.requestTimeoutSeconds))
    }

    /// Supervises the pool until it stops; returns the exit code.
    func run() -> Int32 {
        log.info(
            "hypervisord started",
            ["listen": "\(configuration.listen)", "workers": String(configuration.workers)])
        perform(supervisor.start())
        while exitCode == nil {
            for signal in signals.wait(timeout: 0.25) {
                switch signal {
                case SIGTERM, SIGINT: perform(supervisor.signalReceived(.terminate, now: monotonicSeconds()))
                case SIGQUIT: perform(supervisor.signalReceived(.quit, now: monotonicSeconds()))
                case SIGHUP: perform(supervisor.signalReceived(.reload, now: monotonicSeconds()))
                case SIGUSR1: perform(supervisor.signalReceived(.reopenLogs, now: monotonicSeconds()))
                default: break
                }
            }
            reapChildren()
            if exitCode == nil {
                perform(supervisor.timerFired(now: monotonicSeconds(), busySince: scoreboard.busySince()))
            }
        }
        listenSocket.unlinkPath()
        if let pidFile { unlink(pidFile) }
        log.info("hypervisord stopped")
        return exitCode ?? 0
    }

    private func reapChildren() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            if let slot = slots.removeValue(forKey: pid) { scoreboard.release(slot: slot) }
            // WIFEXITED/WTERMSIG are macros: decode the status word by hand.
            let exit: WorkerExit = status & 0x7F == 0 ? .exited((status >> 8) & 0xFF) : .signaled(status & 0x7F)
            perform(supervisor.childExited(pid: pid, exit, now: monotonicSeconds()))
        }
    }

    private func perform(_ actions: [Supervisor.Action]) {
        for action in actions {
            switch action {
            case .spawn(let count):
                for _ in 0..<count { spawnWorker() }
            case .signal(let signal, let pids):
                for pid in pids { send(signal, to: pid) }
            case .reloadConfiguration:
                reloadConfiguration()
            case .reopenLogs:
                log.reopen()
                log.info("reopened log file")
            case .stopListening:
                listenSocket.unlinkPath()
            case .log(let level, let message):
                switch level {
                case .info: log.info(message)
                case .warning: log.warning(message)
                case .error: log.error(message)
                }
            case .exit(let code):
                exitCode = code
            }
        }
    }

    private func reloadConfiguration() {
        let fresh: Configuration
        do {
            fresh = try Configuration.parse(Configuration.environment(), cpuCount: cpuCount())
        } catch {
            log.error("reload refused; keeping the running configuration", ["error": error.description])
            return
        }
        if fresh.listen != configuration.listen {
            log.warning("HV_LISTEN changed; a restart is needed for it to take effect")
        }
        var kept = fresh
        kept.listen = configuration.listen
        configuration = kept
        log.retarget(path: kept.logFile, level: kept.logLevel)
        perform(supervisor.configurationReloaded(Master.policy(kept), now: monotonicSeconds()))
    }

    private func spawnWorker() {
        guard let slot = scoreboard.claim() else {
            log.error("scoreboard full; not spawning a worker")
            return
        }
        let parent = getpid()
        fflush(nil)
        let pid = fork()
        if pid == 0 {
            signals.closeInChild()
            _ = hv_set_parent_death_signal(SIGTERM)
            // The master may have died between fork and prctl.
            if getppid() != parent { _exit(0) }
            log.adopt(role: "worker")
            do {
                let worker = try Worker(
                    configuration: configuration, log: log, listenFD: listenSocket.fd, scoreboard: scoreboard,
                    slot: slot, openAPI: openAPI,
                    acceptGate: AcceptGate(
                        file: acceptGateFile, width: configuration.acceptingWorkers, workers: configuration.workers,
                        slot: slot))
                _exit(worker.run())
            } catch {
                log.error("worker setup failed", ["error": String(describing: error)])
                _exit(70)
            }
        }
        guard pid > 0 else {
            scoreboard.release(slot: slot)
            log.error("fork failed", ["errno": String(errno)])
            return
        }
        scoreboard.assign(slot: slot, pid: pid)
        slots[pid] = slot
        supervisor.spawned(pid: pid)
    }

    /// Runs migrations in a short-lived child so the master itself never opens a database connection.
    /// PostgreSQL may still be starting: tries for about 30 seconds while it cannot connect, but stops at once when
    /// PostgreSQL refuses a migration (retrying cannot help).
    private static func migrate(_ configuration: Configuration, log: Log, signals: SignalPipe) throws {
        for attempt in 1...30 {
            fflush(nil)
            let pid = fork()
            if pid == 0 {
                log.adopt(role: "migrator")
                do {
                    let connection = try PostgresConnection(url: configuration.databaseURL)
                    let applied = try Migrations.migrate(connection)
                    if !applied.isEmpty {
                        log.info("applied migrations", ["versions": applied.map(String.init).joined(separator: ",")])
                    }
                    _exit(0)
                } catch {
                    log.error("migration failed", ["attempt": String(attempt), "error": error.message])
                    _exit(error.connectionLost ? 1 : 2)
                }
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            if status == 0 { return }
            if status & 0x7F == 0 && (status >> 8) & 0xFF == 2 { throw MigrationRefused() }
            // A second before the next attempt. The child's SIGCHLD is already in the pipe and must not cut it short
            // (it once made the 30 attempts take 3 seconds).
            let next = monotonicSeconds() + 1
            var stop = false
            repeat {
                stop = signals.wait(timeout: max(0, next - monotonicSeconds())).contains {
                    $0 == SIGTERM || $0 == SIGINT || $0 == SIGQUIT
                }
            } while !stop && monotonicSeconds() < next
            if stop { break }
        }
        throw SystemError("migrate the database", ECONNREFUSED)
    }

    /// PostgreSQL refused a migration, or the database was migrated by another build; the log has its message.
    struct MigrationRefused: Error, CustomStringConvertible {
        var description: String { "the database cannot be migrated (the log says why)" }
    }

    /// Writes our pid, refusing when the file names a master that is still running.
    private static func claimPIDFile(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = read(fd, &buffer, buffer.count)
            close(fd)
            if n > 0, let other = Int32(String(decoding: buffer[0..<n], as: UTF8.self).filter(\.isNumber)),
                other != getpid(), kill(other, 0) == 0
            {
                throw SystemError("pid file \(path) names running process \(other)", EEXIST)
            }
        }
        let out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard out >= 0 else { throw SystemError("write pid file \(path)", errno) }
        var text = Array("\(getpid())\n".utf8)
        _ = write(out, &text, text.count)
        close(out)
    }
}

func cpuCount() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
