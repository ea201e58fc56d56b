import Glibc

/// Per-worker state in memory shared between the master and its workers (mapped before `fork`).
///
/// Each worker writes only its own slot; the master reads them to find workers stuck in one request, and `/metrics`
/// (in any worker) reads them all. Aligned 64-bit stores are atomic on the platforms we run on, and a stale read only
/// delays a decision by a tick or shows a count one request late.
///
/// A slot's request counters are never reset: the next worker forked into the slot adds to them, so their sum over
/// all slots only grows, as Prometheus expects of a counter, however often workers are recycled.
final class Scoreboard {
    static let capacity = 1024
    /// Routes counted per slot: the router's by index, and `unmatchedRoute` for requests no route took.
    static let routeCapacity = 64
    static let unmatchedRoute = routeCapacity - 1
    /// Upper bounds, in seconds, of the request-duration histogram's buckets; one more bucket counts the slower rest.
    static let bucketBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// Per route: answers by status class (2xx, 3xx, 4xx, 5xx), one count per bucket, the total in microseconds.
    private static let statusClasses = 4
    private static let routeFields = statusClasses + bucketBounds.count + 2
    /// Per slot: pid, busy since (monotonic µs, 0 when idle), requests served by its current worker, the route of the
    /// request it is in (index + 1; 0 until routed), the routes' counters.
    private static let slotFields = 4 + routeCapacity * routeFields
    /// Before the slots, one word: how many slots were ever claimed, so that readers scan no further (the pages of
    /// slots never used are never touched).
    private static let wordCount = 1 + capacity * slotFields
    private let words: UnsafeMutablePointer<Int64>
    private let byteCount = Scoreboard.wordCount * MemoryLayout<Int64>.stride

    /// - Throws: `SystemError` when the mapping fails.
    init() throws {
        let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else { throw SystemError("mmap scoreboard", errno) }
        words = raw.bindMemory(to: Int64.self, capacity: Scoreboard.wordCount)
    }

    deinit { munmap(words, byteCount) }

    private var slotsUsed: Int { Int(words[0]) }
    private func slot(_ slot: Int) -> UnsafeMutablePointer<Int64> { words + 1 + slot * Scoreboard.slotFields }
    private func route(_ route: Int, in slot: Int) -> UnsafeMutablePointer<Int64> {
        self.slot(slot) + 4 + route * Scoreboard.routeFields
    }

    /// Reserves a free slot for a worker about to be forked, or nil when every slot is taken.
    func claim() -> Int? {
        for index in 0..<Scoreboard.capacity where slot(index)[0] == 0 {
            let fields = slot(index)
            fields[0] = -1
            fields[1] = 0
            fields[2] = 0
            words[0] = max(words[0], Int64(index + 1))
            return index
        }
        return nil
    }

    /// Names the worker forked into `slot`.
    func assign(slot index: Int, pid: Int32) { slot(index)[0] = Int64(pid) }

    func release(slot index: Int) { slot(index)[0] = 0 }

    /// Called by the worker around each request: when it starts, and when its response is written, with the index
    /// of the route that answered it (`unmatchedRoute` when none did).
    func markBusy(slot index: Int, since: Double) {
        slot(index)[3] = 0
        slot(index)[1] = Int64(since * 1e6)
    }

    /// Says which route the request the worker in `slot` is in took, once routing found it.
    func markRouted(slot index: Int, route: Int) { slot(index)[3] = Int64(route + 1) }
    func markIdle(slot index: Int, route: Int, status: Int, seconds: Double) {
        let fields = slot(index)
        fields[1] = 0
        fields[2] += 1
        let counters = self.route(min(max(route, 0), Scoreboard.unmatchedRoute), in: index)
        counters[min(max(status / 100 - 2, 0), Scoreboard.statusClasses - 1)] += 1
        let bucket = Scoreboard.bucketBounds.firstIndex { seconds <= $0 } ?? Scoreboard.bucketBounds.count
        counters[Scoreboard.statusClasses + bucket] += 1
        counters[Scoreboard.routeFields - 1] += Int64((seconds * 1e6).rounded())
    }

    /// What every worker that ever ran answered for one route.
    struct RouteTotals: Equatable {
        /// Answers with status 2xx, 3xx, 4xx and 5xx (anything outside counts as the nearest).
        var byStatusClass = [Int64](repeating: 0, count: Scoreboard.statusClasses)
        /// Requests per histogram bucket (`bucketBounds`, then the rest); not cumulative.
        var byBucket = [Int64](repeating: 0, count: Scoreboard.bucketBounds.count + 1)
        var seconds = 0.0
        var count: Int64 { byStatusClass.reduce(0, +) }
    }

    func totals(route: Int) -> RouteTotals {
        var totals = RouteTotals()
        for index in 0..<slotsUsed {
            let counters = self.route(route, in: index)
            for i in 0..<Scoreboard.statusClasses { totals.byStatusClass[i] += counters[i] }
            for i in 0...Scoreboard.bucketBounds.count { totals.byBucket[i] += counters[Scoreboard.statusClasses + i] }
            totals.seconds += Double(counters[Scoreboard.routeFields - 1]) / 1e6
        }
        return totals
    }

    /// A live worker: its pid, the start of the request it is in and that request's route (nil when idle or not
    /// routed yet), and how many it has served.
    struct WorkerState: Equatable {
        var pid: Int32
        var busySince: Double?
        var route: Int? = nil
        var served: Int64
    }

    func workers() -> [WorkerState] {
        (0..<slotsUsed).compactMap { index in
            let fields = slot(index)
            guard fields[0] > 0 else { return nil }
            let busy = fields[1] != 0
            return WorkerState(
                pid: Int32(fields[0]), busySince: busy ? Double(fields[1]) / 1e6 : nil,
                route: busy && fields[3] > 0 ? Int(fields[3]) - 1 : nil, served: fields[2])
        }
    }

    /// Start times of the requests in progress, by worker pid.
    func busySince() -> [Int32: Double] {
        var result: [Int32: Double] = [:]
        for worker in workers() { result[worker.pid] = worker.busySince }
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
