import Glibc

/// Per-worker state in memory shared between the master and its workers (mapped before `fork`).
///
/// Each worker writes only its own slot; the master reads them to find workers stuck in one request.
/// Aligned 64-bit stores are atomic on the platforms we run on, and a stale read only delays a decision by a tick.
final class Scoreboard {
    static let capacity = 1024
    private static let fields = 3  // pid, busy since (monotonic µs, 0 when idle), requests served
    private let base: UnsafeMutablePointer<Int64>
    private let byteCount = Scoreboard.capacity * Scoreboard.fields * MemoryLayout<Int64>.stride

    /// - Throws: `SystemError` when the mapping fails.
    init() throws {
        let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else { throw SystemError("mmap scoreboard", errno) }
        base = raw.bindMemory(to: Int64.self, capacity: Scoreboard.capacity * Scoreboard.fields)
    }

    deinit { munmap(base, byteCount) }

    /// Reserves a free slot for a worker about to be forked, or nil when every slot is taken.
    func claim() -> Int? {
        for slot in 0..<Scoreboard.capacity where base[slot * Scoreboard.fields] == 0 {
            base[slot * Scoreboard.fields] = -1
            base[slot * Scoreboard.fields + 1] = 0
            base[slot * Scoreboard.fields + 2] = 0
            return slot
        }
        return nil
    }

    /// Names the worker forked into `slot`.
    func assign(slot: Int, pid: Int32) { base[slot * Scoreboard.fields] = Int64(pid) }

    func release(slot: Int) { base[slot * Scoreboard.fields] = 0 }

    /// Called by the worker around each request.
    func markBusy(slot: Int, since: Double) { base[slot * Scoreboard.fields + 1] = Int64(since * 1e6) }
    func markIdle(slot: Int) {
        base[slot * Scoreboard.fields + 1] = 0
        base[slot * Scoreboard.fields + 2] += 1
    }

    /// Start times of the requests in progress, by worker pid.
    func busySince() -> [Int32: Double] {
        var result: [Int32: Double] = [:]
        for slot in 0..<Scoreboard.capacity {
            let pid = base[slot * Scoreboard.fields]
            let since = base[slot * Scoreboard.fields + 1]
            if pid > 0 && since != 0 { result[Int32(pid)] = Double(since) / 1e6 }
        }
        return result
    }
}

/// A failed system call, with its errno.
struct SystemError: Error, CustomStringConvertible {
    let operation: String
    let code: Int32
    init(_ operation: String, _ code: Int32) {
        self.operation = operation
        self.code = code
    }
    var description: String { "\(operation) failed: \(String(cString: strerror(code)))" }
}
