/// A signal the master acts on.
enum MasterSignal: Equatable, Sendable {
    /// SIGTERM or SIGINT: stop; workers get a short grace to finish their request.
    case terminate
    /// SIGQUIT: graceful stop; workers finish their request and drain what is queued.
    case quit
    /// SIGHUP: re-read the configuration and replace the workers one at a time.
    case reload
    /// SIGUSR1: reopen log files (logrotate's `postrotate`).
    case reopenLogs
}

/// A signal the master sends to workers.
enum WorkerSignal: Equatable, Sendable {
    /// SIGQUIT: finish the current request, serve what is queued, exit.
    case quit
    /// SIGTERM: exit now.
    case terminate
    /// SIGKILL.
    case kill
    /// SIGUSR1.
    case reopenLogs
}

/// How a worker process ended, as `waitpid` reported it.
enum WorkerExit: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    var isClean: Bool { self == .exited(0) }
    var description: String {
        switch self {
        case .exited(let code): "status=\(code)"
        case .signaled(let signal): "signal=\(signal)"
        }
    }
}

/// The master's decisions as a value: events in, actions out. Only the loop around it forks, signals and waits.
///
/// States and which may replace which:
/// - `normal` → `reloading` (SIGHUP), `finishing` (SIGQUIT), `terminating` (SIGTERM/SIGINT);
/// - `reloading` → `normal` (every old worker replaced), `finishing`, `terminating`;
/// - `finishing` → `terminating` (SIGTERM/SIGINT);
/// - `terminating` is final: the master exits when its last worker has.
struct Supervisor: Sendable {
    enum State: Equatable, Sendable { case normal, reloading, finishing, terminating }

    enum Action: Equatable, Sendable {
        case spawn(count: Int)
        case signal(WorkerSignal, to: [Int32])
        /// Re-read the configuration, then call `configurationReloaded(_:now:)`.
        case reloadConfiguration
        case reopenLogs
        /// Stop taking new connections (unlink the socket) before the workers drain.
        case stopListening
        case log(Level, String)
        case exit(code: Int32)
    }
    enum Level: Equatable, Sendable { case info, warning, error }

    /// The knobs the decisions depend on.
    struct Policy: Equatable, Sendable {
        var workers: Int
        /// A worker busy in one request longer than this is killed.
        var requestTimeout: Double
        /// How long workers may take to finish after SIGTERM/SIGINT before they are terminated.
        var terminateGrace: Double = 5
        /// This many unclean exits within `crashWindow` seconds make the master back off.
        var crashLimit: Int = 5
        var crashWindow: Double = 10
        var maximumBackoff: Double = 60
    }

    private struct Worker: Sendable {
        var retiring = false
        var killedForTimeout = false
    }

    private(set) var state: State = .normal
    private(set) var policy: Policy
    private var workers: [Int32: Worker] = [:]
    /// Old workers still to be replaced during a reload, oldest first.
    private var toReplace: [Int32] = []
    private var crashes: [Double] = []
    private var backoff: Double = 0
    private var lastCrash: Double = -.infinity
    private var respawnNotBefore: Double = 0
    /// Workers that should be running but are not, waiting for the back-off to pass.
    private var owed = 0
    private var stopDeadline: Double = .infinity
    private var escalation: WorkerSignal = .quit

    init(policy: Policy) { self.policy = policy }

    var liveWorkers: [Int32] { workers.keys.sorted() }

    /// The first actions: start the pool.
    mutating func start() -> [Action] { [.spawn(count: policy.workers)] }

    /// Records a worker the loop forked for a `spawn` action.
    mutating func spawned(pid: Int32) { workers[pid] = Worker() }

    /// A worker's `waitpid` status arrived.
    mutating func childExited(pid: Int32, _ exit: WorkerExit, now: Double) -> [Action] {
        guard let worker = workers.removeValue(forKey: pid) else { return [] }
        var actions: [Action] = []
        let who = "worker pid=\(pid) exited \(exit)"
        switch state {
        case .finishing, .terminating:
            actions.append(.log(.info, who))
            if workers.isEmpty { actions.append(.exit(code: 0)) }
            return actions
        case .normal, .reloading:
            break
        }
        if worker.retiring {
            actions.append(.log(.info, who + " (replaced)"))
        } else if exit.isClean {
            actions.append(.log(.info, who + " (recycled)"))
        } else if worker.killedForTimeout {
            actions.append(.log(.warning, who + " (killed after \(Int(policy.requestTimeout))s in one request)"))
        } else {
            actions.append(.log(.error, who + " unexpectedly"))
            lastCrash = now
            crashes = crashes.filter { now - $0 < policy.crashWindow } + [now]
            if crashes.count >= policy.crashLimit {
                backoff = min(policy.maximumBackoff, max(1, backoff * 2))
                respawnNotBefore = now + backoff
                crashes.removeAll()
                actions.append(
                    .log(
                        .error,
                        "workers died \(policy.crashLimit) times within \(Int(policy.crashWindow))s;"
                            + " backing off \(Int(backoff))s before respawning"))
            }
        }
        if state == .reloading && worker.retiring {
            return actions + replaceNext(now: now)
        }
        return actions + topUp(now: now)
    }

    /// A signal reached the master.
    mutating func signalReceived(_ signal: MasterSignal, now: Double) -> [Action] {
        switch signal {
        case .reopenLogs:
            return [.reopenLogs, .signal(.reopenLogs, to: liveWorkers)]
        case .reload:
            guard state == .normal || state == .reloading else { return [] }
            return [.reloadConfiguration]
        case .quit:
            guard state == .normal || state == .reloading else { return [] }
            return stop(.finishing, grace: policy.requestTimeout, now: now)
        case .terminate:
            guard state != .terminating else { return [] }
            return stop(.terminating, grace: policy.terminateGrace, now: now)
        }
    }

    /// The loop re-read the configuration for a `reloadConfiguration` action; replace workers one at a time.
    mutating func configurationReloaded(_ newPolicy: Policy, now: Double) -> [Action] {
        guard state == .normal || state == .reloading else { return [] }
        policy = newPolicy
        state = .reloading
        toReplace = workers.filter { !$0.value.retiring }.keys.sorted()
        let count = toReplace.count
        return [.log(.info, "reloading: replacing \(count) workers one at a time")] + replaceNext(now: now)
    }

    /// Called about every 250 ms with the start time of each busy worker's current request.
    mutating func timerFired(now: Double, busySince: [Int32: Double]) -> [Action] {
        var actions: [Action] = []
        if state == .finishing || state == .terminating {
            if now >= stopDeadline {
                escalation = escalation == .quit ? .terminate : .kill
                stopDeadline = now + 2
                actions.append(.log(.warning, "workers still running at the deadline; sending \(escalation)"))
            }
            // SIGQUIT is repeated because one can land between a worker's flag check and its accept().
            if !workers.isEmpty { actions.append(.signal(escalation, to: liveWorkers)) }
            return actions
        }
        if backoff > 0 && now - lastCrash > policy.maximumBackoff + policy.crashWindow { backoff = 0 }
        let stuck = busySince.filter { pid, since in
            workers[pid].map { !$0.killedForTimeout } == true && now - since > policy.requestTimeout
        }.keys.sorted()
        for pid in stuck {
            workers[pid]?.killedForTimeout = true
            actions.append(.log(.warning, "worker pid=\(pid) busy for over \(Int(policy.requestTimeout))s; killing it"))
        }
        if !stuck.isEmpty { actions.append(.signal(.kill, to: stuck)) }
        let retiring = workers.filter { $0.value.retiring }.keys.sorted()
        if !retiring.isEmpty { actions.append(.signal(.quit, to: retiring)) }
        actions += topUp(now: now)
        return actions
    }

    private mutating func stop(_ next: State, grace: Double, now: Double) -> [Action] {
        state = next
        toReplace.removeAll()
        owed = 0
        stopDeadline = now + grace
        escalation = .quit
        var actions: [Action] = [
            .log(.info, next == .finishing ? "graceful stop requested" : "stop requested"), .stopListening,
        ]
        if workers.isEmpty {
            actions.append(.exit(code: 0))
        } else {
            actions.append(.signal(.quit, to: liveWorkers))
        }
        return actions
    }

    /// Starts the replacement of the next old worker before retiring it, or ends the reload when none is left.
    private mutating func replaceNext(now: Double) -> [Action] {
        while let pid = toReplace.first {
            toReplace.removeFirst()
            guard workers[pid] != nil else { continue }
            workers[pid]?.retiring = true
            return topUp(now: now) + [.signal(.quit, to: [pid])]
        }
        var actions = topUp(now: now)
        if workers.values.allSatisfy({ !$0.retiring }) {
            state = .normal
            actions.append(.log(.info, "reload complete"))
        }
        return actions
    }

    /// Spawns what the pool lacks, unless backing off.
    private mutating func topUp(now: Double) -> [Action] {
        let serving = workers.values.filter { !$0.retiring }.count
        owed = max(0, policy.workers - serving)
        guard owed > 0, now >= respawnNotBefore else { return [] }
        let count = owed
        owed = 0
        return [.spawn(count: count)]
    }
}
