import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a `Stack` operation failed.
enum StackError: Error, CustomStringConvertible {
    case missingBinary(String)
    case scriptFailed(command: String, status: Int32, output: String)
    case hypervisordExited(status: Int32, logTail: String)
    case notReady(timeout: TimeInterval, logTail: String)
    case notRunning
    case externalService(String)

    var description: String {
        switch self {
        case .missingBinary(let path):
            return "no hypervisord at \(path); run `swift build` first"
        case .scriptFailed(let command, let status, let output):
            return "scripts/stack.sh \(command) exited with \(status):\n\(output)"
        case .hypervisordExited(let status, let logTail):
            return "hypervisord exited during startup with status \(status); log tail:\n\(logTail)"
        case .notReady(let timeout, let logTail):
            return "/readyz did not answer 200 within \(timeout) s; log tail:\n\(logTail)"
        case .notRunning:
            return "hypervisord is not running"
        case .externalService(let name):
            return "\(name) is an external server (set by the environment); the stack cannot stop or start it"
        }
    }
}

/// A private Hypervisor stack for one test suite: PostgreSQL, Redis and nginx started by
/// `scripts/stack.sh` in a throwaway state folder under /tmp (short, for the unix socket length
/// limit) on a free port, and `.build/debug/hypervisord` in front of them.
///
/// `SQL_DB_URL`/`POSTGRES_USER` and `REDIS_HOST` in the test's environment (or in `environment`)
/// replace the private PostgreSQL and Redis. `stop()` removes everything; a stack left behind by a
/// crashed test run is stopped and removed by the next `start()`.
final class Stack: @unchecked Sendable {
    /// The repository root, found from this file's path.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Support
        .deletingLastPathComponent()  // IntegrationTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    /// The throwaway `HV_STATE_DIR`.
    let stateDir: String
    /// nginx's HTTP port on 127.0.0.1 (`HV_PORT`).
    let port: Int
    /// The hypervisord executable.
    let binary: String
    /// The service log (`HV_LOG_FILE`).
    let logPath: String
    /// hypervisord's stdout and stderr.
    let outputPath: String
    /// The master's pid file (`--pid-file`).
    let pidFilePath: String
    /// The FastCGI socket (`HV_LISTEN`) unless `environment` sets another.
    let socketPath: String
    /// A client for nginx on `port`.
    let client: HTTPClient

    /// The `SQL_DB_URL` hypervisord gets (the private cluster's unless set by the environment).
    private(set) var databaseURL: String = ""
    /// `databaseURL` for `database` as the `postgres` superuser (trusted on the private socket).
    func superuserURL(database: String = "hypervisor") -> String {
        var result = databaseURL.replacingOccurrences(of: "user=hypervisor", with: "user=postgres")
        if let range = result.range(of: "/hypervisor?") { result.replaceSubrange(range, with: "/\(database)?") }
        return result
    }
    /// The `REDIS_HOST` hypervisord gets (the private socket unless set by the environment).
    private(set) var redisHost: String = ""
    /// The `JWT_SECRET_KEY` hypervisord gets, from `scripts/stack.sh secret`.
    private var secret = ""

    private let overrides: [String: String]
    private let privatePostgres: Bool
    private let privateRedis: Bool
    private let lock = NSLock()
    private var master: pid_t = 0
    private var masterStatus: Int32?
    private var servicesStarted = false
    private var removed = false

    /// Prepares (but does not start) a stack; `environment` is added to hypervisord's and the
    /// scripts' environment, e.g. `["HV_WORKERS": "4"]`.
    /// Throws when the state folder cannot be created or no free port is found.
    init(environment: [String: String] = [:], binary: String? = nil) throws {
        Stack.removeAbandonedStacks()
        port = try Stack.freePort()
        var template = Array("/tmp/hvt.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        stateDir = String(cString: made)
        chmod(stateDir, 0o755)
        do {
            // Lets a later run recognise this folder as abandoned once this process is gone.
            try "\(getpid())\n".write(toFile: stateDir + "/owner.pid", atomically: true, encoding: .utf8)
        } catch {
            try? FileManager.default.removeItem(atPath: stateDir)
            throw error
        }
        // HV_TEST_BINARY lets a build in another scratch folder (swift build --scratch-path) be tested.
        self.binary =
            binary ?? ProcessInfo.processInfo.environment["HV_TEST_BINARY"]
            ?? Stack.packageRoot.appendingPathComponent(".build/debug/hypervisord").path
        logPath = stateDir + "/log/hypervisor.log"
        outputPath = stateDir + "/log/hypervisord.out"
        pidFilePath = stateDir + "/run/hypervisord.pid"
        socketPath = stateDir + "/run/hypervisor.sock"
        client = HTTPClient(port: port)
        // Logins in tests hash with a cheap scrypt cost unless a test asks for the real one.
        overrides = ["HV_TEST_SCRYPT_LOG_N": "4"].merging(environment) { $1 }

        let merged = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        privatePostgres = (merged["SQL_DB_URL"] ?? "").isEmpty && (merged["POSTGRES_USER"] ?? "").isEmpty
        privateRedis = (merged["REDIS_HOST"] ?? "").isEmpty
        Registry.shared.add(self)
    }

    deinit {
        stop()
    }

    /// A started stack, or why it could not start: what a suite sharing one stack keeps in a `static let`, so that
    /// its first test starts it (it stops when the test process exits).
    static func started(environment: [String: String] = [:]) -> Result<Stack, any Error> {
        Result {
            let stack = try Stack(environment: environment)
            try stack.start()
            return stack
        }
    }

    // MARK: - Whole stack

    /// Starts PostgreSQL, Redis, nginx and hypervisord and waits until `/readyz` answers 200.
    /// On failure everything started so far is stopped and the state folder removed.
    /// Throws `StackError` naming the step that failed (with the log tail for hypervisord).
    func start(timeout: TimeInterval = 60) throws {
        do {
            guard FileManager.default.isExecutableFile(atPath: binary) else { throw StackError.missingBinary(binary) }
            lock.withLock { servicesStarted = true }
            if privatePostgres {
                try script("postgres-start")
                databaseURL = try script("postgres-url").trimmingCharacters(in: .whitespacesAndNewlines)
            } else {
                databaseURL = environmentValue("SQL_DB_URL") ?? ""
            }
            if privateRedis {
                try script("redis-start")
                redisHost = stateDir + "/run/redis.sock"
            } else {
                redisHost = environmentValue("REDIS_HOST") ?? ""
            }
            secret = try script("secret").trimmingCharacters(in: .whitespacesAndNewlines)
            try script("nginx-start")
            try launchHypervisord()
            try waitUntilReady(timeout: timeout)
        } catch {
            stop()
            throw error
        }
    }

    /// Stops hypervisord (SIGTERM, then SIGKILL after `timeout`), nginx, Redis and PostgreSQL, and
    /// removes the state folder. Safe to call more than once.
    func stop(timeout: TimeInterval = 40) {
        stopHypervisord(timeout: timeout)
        let (started, alreadyRemoved) = lock.withLock { (servicesStarted, removed) }
        if started {
            _ = try? script("nginx-stop")
            if privateRedis { _ = try? script("redis-stop") }
            if privatePostgres { _ = try? script("postgres-stop") }
        }
        if !alreadyRemoved {
            try? FileManager.default.removeItem(atPath: stateDir)
            lock.withLock {
                removed = true
                servicesStarted = false
            }
            Registry.shared.remove(self)
        }
    }

    // MARK: - hypervisord

    /// The master's pid (0 before `start()`).
    var masterPID: pid_t {
        lock.withLock { master }
    }

    /// Whether the master process is still running (reaps it once it has exited).
    var masterIsRunning: Bool {
        lock.withLock {
            guard master > 0 else { return false }
            if masterStatus == nil { masterStatus = Spawn.tryWait(master) }
            return masterStatus == nil
        }
    }

    /// The master's exit status once it has exited (128 + the signal number when killed).
    var masterExitStatus: Int32? {
        _ = masterIsRunning
        return lock.withLock { masterStatus }
    }

    /// The pid written to `--pid-file`, if any.
    func pidFromFile() -> pid_t? {
        (try? String(contentsOfFile: pidFilePath, encoding: .utf8))
            .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The live (non-zombie) children of the master, in ascending order.
    func workerPIDs() -> [pid_t] {
        let master = masterPID
        guard master > 0 else { return [] }
        return Stack.children(of: master)
    }

    /// Sends `signal` (e.g. `SIGHUP`, `SIGQUIT`, `SIGUSR1`) to the master.
    /// Throws `StackError.notRunning` when it is not running.
    func signalMaster(_ signal: Int32) throws {
        let pid = masterPID
        guard pid > 0, masterIsRunning, kill(pid, signal) == 0 else { throw StackError.notRunning }
    }

    /// Waits for the master to exit; returns its exit status (128 + signal when killed), nil on
    /// timeout or when it was never started.
    @discardableResult
    func waitForMasterExit(timeout: TimeInterval) -> Int32? {
        guard masterPID > 0 else { return nil }
        let deadline = Date().addingTimeInterval(timeout)
        while masterIsRunning {
            if Date() > deadline { return nil }
            usleep(20_000)
        }
        return masterExitStatus
    }

    /// Whether `GET /readyz` answers 200 right now.
    func isReady() -> Bool {
        var quick = client
        quick.timeout = 2
        return (try? quick.get("/readyz").status) == 200
    }

    /// Polls `/readyz` until it answers 200.
    /// Throws `StackError.hypervisordExited` if the master exits, `.notReady` on timeout.
    func waitUntilReady(timeout: TimeInterval = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if masterPID > 0, !masterIsRunning {
                throw StackError.hypervisordExited(status: masterExitStatus ?? -1, logTail: logTail())
            }
            if isReady() { return }
            if Date() > deadline { throw StackError.notReady(timeout: timeout, logTail: logTail()) }
            usleep(100_000)
        }
    }

    // MARK: - Services

    /// Stops the private PostgreSQL (`pg_ctl stop -m fast`).
    /// Throws when it is external or the script fails.
    func stopPostgres() throws {
        guard privatePostgres else { throw StackError.externalService("PostgreSQL") }
        try script("postgres-stop")
    }

    /// Starts the private PostgreSQL again (same data).
    /// Throws when it is external or the script fails.
    func startPostgres() throws {
        guard privatePostgres else { throw StackError.externalService("PostgreSQL") }
        try script("postgres-start")
    }

    /// Stops the private Redis.
    /// Throws when it is external or the script fails.
    func stopRedis() throws {
        guard privateRedis else { throw StackError.externalService("Redis") }
        try script("redis-stop")
    }

    /// Starts the private Redis again (empty: it keeps no snapshots).
    /// Throws when it is external or the script fails.
    func startRedis() throws {
        guard privateRedis else { throw StackError.externalService("Redis") }
        try script("redis-start")
    }

    /// Re-renders nginx's configuration and reloads it.
    /// Throws when the script fails.
    func reloadNginx() throws {
        try script("nginx-reload")
    }

    // MARK: - Logs

    /// The service log so far ("" when it does not exist yet).
    func logText() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// hypervisord's stdout and stderr so far.
    func outputText() -> String {
        (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    }

    /// The nginx access log so far.
    func nginxAccessLogText() -> String {
        (try? String(contentsOfFile: stateDir + "/log/nginx-access.log", encoding: .utf8)) ?? ""
    }

    /// Waits until the service log contains `text`; returns whether it did within `timeout`.
    func waitForLog(containing text: String, timeout: TimeInterval = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if logText().contains(text) { return true }
            usleep(50_000)
        } while Date() < deadline
        return logText().contains(text)
    }

    /// The last `lines` lines of the service log and of hypervisord's output.
    func logTail(lines: Int = 40) -> String {
        let log = logText().split(separator: "\n", omittingEmptySubsequences: false).suffix(lines)
        let output = outputText().split(separator: "\n", omittingEmptySubsequences: false).suffix(lines)
        return "--- \(logPath)\n" + log.joined(separator: "\n") + "\n--- hypervisord stdout/stderr\n"
            + output.joined(separator: "\n")
    }

    // MARK: - Private

    private func environmentValue(_ key: String) -> String? {
        overrides[key] ?? ProcessInfo.processInfo.environment[key]
    }

    /// The environment for the scripts: the test's, the stack's knobs, then the overrides.
    private var scriptEnvironment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["HV_STATE_DIR"] = stateDir
        environment["HV_PORT"] = String(port)
        environment["HV_PG_SHARED_BUFFERS"] = environment["HV_PG_SHARED_BUFFERS"] ?? "128MB"
        return environment.merging(overrides) { $1 }
    }

    /// hypervisord's environment, and `hvctl`'s.
    private var serviceEnvironment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["HV_STATE_DIR"] = stateDir
        environment["HV_PORT"] = String(port)
        environment["HV_LISTEN"] = socketPath
        environment["HV_LOG_FILE"] = logPath
        environment["JWT_SECRET_KEY"] = secret
        if privatePostgres { environment["SQL_DB_URL"] = databaseURL }
        if privateRedis { environment["REDIS_HOST"] = redisHost }
        return environment.merging(overrides) { $1 }
    }

    /// Runs `hvctl` (built next to the hypervisord binary) with the service's configuration, in the state folder;
    /// returns its exit status and what it printed.
    func hvctl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let outputPath = NSTemporaryDirectory() + "hvt-hvctl-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let pid = try Spawn.spawn(
            URL(fileURLWithPath: binary).deletingLastPathComponent().appendingPathComponent("hvctl").path,
            arguments, environment: serviceEnvironment, directory: stateDir, output: outputPath)
        let status = Spawn.wait(pid)
        return (status, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }

    private func launchHypervisord() throws {
        let environment = serviceEnvironment

        // The state folder has no .env, so the repository's .env cannot leak into a test.
        let pid = try Spawn.spawn(
            binary,
            ["--pid-file", pidFilePath],
            environment: environment,
            directory: stateDir,
            output: outputPath
        )
        lock.withLock {
            master = pid
            masterStatus = nil
        }
    }

    private func stopHypervisord(timeout: TimeInterval) {
        let master = masterPID
        guard master > 0 else { return }
        var workers = Stack.children(of: master)
        if masterIsRunning {
            kill(master, SIGTERM)
            if waitForMasterExit(timeout: timeout) == nil {
                workers += Stack.children(of: master)
                kill(master, SIGKILL)
                _ = waitForMasterExit(timeout: 5)
            }
        }
        // Workers normally die with the master; make sure none outlives the test.
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, workers.contains(where: Stack.isAlive) { usleep(20_000) }
        for worker in workers where Stack.isAlive(worker) { kill(worker, SIGKILL) }
        lock.withLock {
            self.master = 0
            self.masterStatus = nil
        }
    }

    /// Runs `scripts/stack.sh command` for this stack and returns its stdout.
    @discardableResult
    private func script(_ command: String) throws -> String {
        try Stack.runScript(command, environment: scriptEnvironment, workingDirectory: stateDir)
    }

    private static func runScript(
        _ command: String,
        environment: [String: String],
        workingDirectory: String
    ) throws -> String {
        let stdoutPath = NSTemporaryDirectory() + "hvt-script-\(UUID().uuidString).out"
        let stderrPath = stdoutPath + ".err"
        defer {
            try? FileManager.default.removeItem(atPath: stdoutPath)
            try? FileManager.default.removeItem(atPath: stderrPath)
        }
        let pid = try Spawn.spawn(
            "/bin/bash",
            [packageRoot.appendingPathComponent("scripts/stack.sh").path, command],
            environment: environment,
            directory: workingDirectory,
            output: stdoutPath,
            error: stderrPath
        )
        let status = Spawn.wait(pid)
        let out = (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw StackError.scriptFailed(command: command, status: status, output: err + out)
        }
        return out
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.init(rawValue: errno) ?? .EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Live (non-zombie) processes whose parent is `parent`, from /proc.
    static func children(of parent: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var result: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry), let (state, ppid) = statusOf(pid) else { continue }
            if ppid == parent, state != "Z" { result.append(pid) }
        }
        return result.sorted()
    }

    /// Whether `pid` exists and is not a zombie.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let (state, _) = statusOf(pid) else { return false }
        return state != "Z"
    }

    /// The state letter and parent pid from /proc/PID/stat (the command name may hold spaces).
    private static func statusOf(_ pid: pid_t) -> (Character, pid_t)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count >= 2, let state = fields[0].first, let ppid = pid_t(fields[1]) else { return nil }
        return (state, ppid)
    }

    /// Stops and removes stacks in /tmp whose test process is gone (a crashed or killed run).
    private static func removeAbandonedStacks() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/tmp") else { return }
        for entry in entries where entry.hasPrefix("hvt.") {
            let dir = "/tmp/" + entry
            guard let text = try? String(contentsOfFile: dir + "/owner.pid", encoding: .utf8),
                let owner = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                owner != getpid(), !isAlive(owner)
            else { continue }
            var environment = ProcessInfo.processInfo.environment
            environment["HV_STATE_DIR"] = dir
            environment["HV_STOP_TIMEOUT"] = "10"
            _ = try? runScript("stop", environment: environment, workingDirectory: dir)
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Stacks not yet stopped, stopped when the test process exits normally. References are weak:
    /// a stack that is no longer referenced stops in `deinit`.
    private final class Registry: @unchecked Sendable {
        private struct WeakStack {
            weak var stack: Stack?
        }

        static let shared = Registry()
        private let lock = NSLock()
        private var stacks: [ObjectIdentifier: WeakStack] = [:]
        private var installed = false

        func add(_ stack: Stack) {
            lock.withLock {
                stacks[ObjectIdentifier(stack)] = WeakStack(stack: stack)
                if !installed {
                    installed = true
                    atexit { Registry.shared.stopAll() }
                }
            }
        }

        func remove(_ stack: Stack) {
            _ = lock.withLock { stacks.removeValue(forKey: ObjectIdentifier(stack)) }
        }

        func stopAll() {
            let remaining = lock.withLock { stacks.values.compactMap(\.stack) }
            for stack in remaining { stack.stop(timeout: 10) }
        }
    }
}

/// Starts processes with `posix_spawn` and reaps them with `waitpid`.
///
/// Not Foundation's `Process`: on Linux it notices a child's exit through a descriptor the child
/// inherits, so a daemon started by the child (postmaster, redis-server, nginx) keeps
/// `waitUntilExit()` blocked forever. Children here get default signal dispositions, an empty
/// signal mask, /dev/null as stdin, files as stdout and stderr, and no other inherited descriptor.
enum Spawn {
    private typealias AddChdir =
        @convention(c) (
            UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>
        ) -> Int32
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// Spawns `path` with `arguments` in `directory`; stdout goes to `output` and stderr to
    /// `error` (or `output`), both appended to.
    /// Throws a `POSIXError` when the process cannot be started.
    static func spawn(
        _ path: String,
        _ arguments: [String],
        environment: [String: String],
        directory: String,
        output: String,
        error: String? = nil
    ) throws -> pid_t {
        // glibc ≥ 2.34 has both; Swift's Glibc module does not declare these GNU extensions.
        guard let chdirSymbol = dlsym(nil, "posix_spawn_file_actions_addchdir_np"),
            let closeFromSymbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np")
        else { throw POSIXError(.ENOSYS) }
        let addChdir = unsafeBitCast(chdirSymbol, to: AddChdir.self)
        let addCloseFrom = unsafeBitCast(closeFromSymbol, to: AddCloseFrom.self)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let writeFlags = O_WRONLY | O_CREAT | O_APPEND
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, writeFlags, 0o644)
        if let error {
            posix_spawn_file_actions_addopen(&actions, 2, error, writeFlags, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        _ = addCloseFrom(&actions, 3)
        _ = addChdir(&actions, directory)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EIO) }
        return pid
    }

    /// Waits for `pid` to exit; returns its exit code, or 128 + the signal that killed it.
    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        return decode(status)
    }

    /// The exit status of `pid` if it has exited (reaping it), nil while it runs.
    static func tryWait(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == 0 { return nil }
        if result < 0 { return -1 }  // not our child any more (already reaped)
        return decode(status)
    }

    private static func decode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}
