import Testing

@testable import HVFastCGI

/// Transcripts of the master's decisions: events in, actions out, no forking.
@Suite struct SupervisorTests {
    private func started(workers: Int = 2) -> Supervisor {
        var supervisor = Supervisor(policy: .init(workers: workers, requestTimeout: 30))
        #expect(supervisor.start() == [.spawn(count: workers)])
        for pid in 1...Int32(workers) { supervisor.spawned(pid: pid) }
        return supervisor
    }

    @Test func deadWorkerIsRespawnedAtOnce() {
        var supervisor = started()
        #expect(
            supervisor.childExited(pid: 1, .signaled(9), now: 1) == [
                .log(.error, "worker pid=1 exited signal=9 unexpectedly"), .spawn(count: 1),
            ])
    }

    @Test func recycledWorkerIsReplacedWithoutCountingAsACrash() {
        var supervisor = started(workers: 1)
        for pid in Int32(1)...10 {
            #expect(supervisor.childExited(pid: pid, .exited(0), now: 1).last == .spawn(count: 1))
            supervisor.spawned(pid: pid + 1)
        }
    }

    @Test func fiveDeathsWithinTheWindowBackOff() {
        var supervisor = started(workers: 1)
        for pid in Int32(1)...4 {
            #expect(supervisor.childExited(pid: pid, .exited(1), now: Double(pid)).last == .spawn(count: 1))
            supervisor.spawned(pid: pid + 1)
        }
        let fifth = supervisor.childExited(pid: 5, .exited(1), now: 5)
        #expect(fifth.contains(.log(.error, "workers died 5 times within 10s; backing off 1s before respawning")))
        #expect(!fifth.contains(.spawn(count: 1)))
        #expect(supervisor.timerFired(now: 5.5, busySince: [:]) == [])
        #expect(supervisor.timerFired(now: 6.1, busySince: [:]) == [.spawn(count: 1)])
        supervisor.spawned(pid: 6)
        // Dying five more times doubles the pause.
        for pid in Int32(6)...9 {
            _ = supervisor.childExited(pid: pid, .exited(1), now: 7)
            supervisor.spawned(pid: pid + 1)
        }
        #expect(
            supervisor.childExited(pid: 10, .exited(1), now: 7).contains(
                .log(.error, "workers died 5 times within 10s; backing off 2s before respawning")))
        #expect(supervisor.timerFired(now: 8.5, busySince: [:]) == [])
        #expect(supervisor.timerFired(now: 9.1, busySince: [:]) == [.spawn(count: 1)])
    }

    @Test func deathsSpreadOverTimeDoNotBackOff() {
        var supervisor = started(workers: 1)
        for pid in Int32(1)...10 {
            #expect(supervisor.childExited(pid: pid, .exited(1), now: Double(pid) * 3).last == .spawn(count: 1))
            supervisor.spawned(pid: pid + 1)
        }
    }

    @Test func reloadReplacesWorkersOneAtATime() {
        var supervisor = started(workers: 2)
        #expect(supervisor.signalReceived(.reload, now: 0) == [.reloadConfiguration])
        #expect(
            supervisor.configurationReloaded(.init(workers: 2, requestTimeout: 30), now: 0) == [
                .log(.info, "reloading: replacing 2 workers one at a time"), .spawn(count: 1), .signal(.quit, to: [1]),
            ])
        #expect(supervisor.state == .reloading)
        supervisor.spawned(pid: 3)
        #expect(
            supervisor.childExited(pid: 1, .exited(0), now: 1) == [
                .log(.info, "worker pid=1 exited status=0 (replaced)"), .spawn(count: 1), .signal(.quit, to: [2]),
            ])
        supervisor.spawned(pid: 4)
        #expect(
            supervisor.childExited(pid: 2, .exited(0), now: 2) == [
                .log(.info, "worker pid=2 exited status=0 (replaced)"), .log(.info, "reload complete"),
            ])
        #expect(supervisor.state == .normal)
        #expect(supervisor.liveWorkers == [3, 4])
    }

    @Test func reloadCanGrowThePool() {
        var supervisor = started(workers: 1)
        _ = supervisor.signalReceived(.reload, now: 0)
        #expect(
            supervisor.configurationReloaded(.init(workers: 3, requestTimeout: 30), now: 0) == [
                .log(.info, "reloading: replacing 1 workers one at a time"), .spawn(count: 3), .signal(.quit, to: [1]),
            ])
    }

    @Test func retiringWorkerIsNudgedUntilItLeaves() {
        var supervisor = started(workers: 1)
        _ = supervisor.signalReceived(.reload, now: 0)
        _ = supervisor.configurationReloaded(.init(workers: 1, requestTimeout: 30), now: 0)
        supervisor.spawned(pid: 2)
        #expect(supervisor.timerFired(now: 0.25, busySince: [:]) == [.signal(.quit, to: [1])])
    }

    @Test func gracefulStopFinishesThenExits() {
        var supervisor = started(workers: 2)
        #expect(
            supervisor.signalReceived(.quit, now: 0) == [
                .log(.info, "graceful stop requested"), .stopListening, .signal(.quit, to: [1, 2]),
            ])
        #expect(supervisor.state == .finishing)
        #expect(supervisor.childExited(pid: 1, .exited(0), now: 1) == [.log(.info, "worker pid=1 exited status=0")])
        #expect(
            supervisor.childExited(pid: 2, .exited(0), now: 1) == [
                .log(.info, "worker pid=2 exited status=0"), .exit(code: 0),
            ])
    }

    @Test func stopEscalatesAfterTheGrace() {
        var supervisor = started(workers: 1)
        _ = supervisor.signalReceived(.terminate, now: 0)
        #expect(supervisor.timerFired(now: 1, busySince: [:]) == [.signal(.quit, to: [1])])
        #expect(
            supervisor.timerFired(now: 5, busySince: [:]) == [
                .log(.warning, "workers still running at the deadline; sending terminate"),
                .signal(.terminate, to: [1]),
            ])
        #expect(
            supervisor.timerFired(now: 7, busySince: [:]) == [
                .log(.warning, "workers still running at the deadline; sending kill"), .signal(.kill, to: [1]),
            ])
    }

    @Test func terminateDuringGracefulStopShortensIt() {
        var supervisor = started(workers: 1)
        _ = supervisor.signalReceived(.quit, now: 0)
        #expect(supervisor.signalReceived(.terminate, now: 1).contains(.signal(.quit, to: [1])))
        #expect(supervisor.state == .terminating)
        #expect(supervisor.signalReceived(.reload, now: 1) == [])
    }

    @Test func stuckWorkerIsKilledAndReplaced() {
        var supervisor = started(workers: 2)
        #expect(
            supervisor.timerFired(now: 40, busySince: [1: 5, 2: 35]) == [
                .log(.warning, "worker pid=1 busy for over 30s; killing it"), .signal(.kill, to: [1]),
            ])
        // Killed once, not again on the next tick.
        #expect(supervisor.timerFired(now: 40.25, busySince: [1: 5]) == [])
        #expect(
            supervisor.childExited(pid: 1, .signaled(9), now: 41) == [
                .log(.warning, "worker pid=1 exited signal=9 (killed after 30s in one request)"), .spawn(count: 1),
            ])
    }

    @Test func reopenLogsReachesEveryWorker() {
        var supervisor = started(workers: 2)
        #expect(supervisor.signalReceived(.reopenLogs, now: 0) == [.reopenLogs, .signal(.reopenLogs, to: [1, 2])])
    }

    @Test func unknownChildIsIgnored() {
        var supervisor = started(workers: 1)
        #expect(supervisor.childExited(pid: 99, .exited(0), now: 0) == [])
    }
}
