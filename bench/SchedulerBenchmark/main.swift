// Scheduler micro-benchmarks for `make bench`: the pure policy of Sources/Domain, no I/O.
//
//     SchedulerBenchmark [--seconds S]    (S of timing per case, default 0.3)
//
// Prints one markdown table: ns per plan and plans per second for
// - `Scheduler.plan(for:)` over a settled cluster of n active deployments (the full greedy pass, empty plan);
// - `Scheduler.plan(for:)` over that cluster plus one higher-priority deployment that preempts (what a preempting
//   create costs when the repository has loaded n deployments);
// - `Scheduler.plan(adding:to:)` with a new deployment that fits in `available` (the fast path).
import Domain

/// A small deterministic generator (SplitMix64), so every run measures the same clusters.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Applies the plan until the cluster is settled (its state equals the desired running set).
func settle(_ snapshot: ClusterSnapshot) -> ClusterSnapshot {
    var snapshot = snapshot
    while true {
        let plan = Scheduler.plan(for: snapshot)
        if plan.start.isEmpty && plan.preempt.isEmpty { return snapshot }
        let start = Set(plan.start)
        let preempt = Set(plan.preempt)
        for index in snapshot.active.indices {
            if start.contains(snapshot.active[index].id) { snapshot.active[index].isRunning = true }
            if preempt.contains(snapshot.active[index].id) { snapshot.active[index].isRunning = false }
        }
    }
}

/// A settled cluster of `count` active deployments with mixed sizes (RAM 2–64) and priorities (0–9), about half of
/// them running, with just enough room left for a deployment of `small` to start.
func settledCluster(count: Int, room small: Resources) -> ClusterSnapshot {
    var random = SplitMix64(state: UInt64(count))
    var active: [ActiveDeployment] = []
    active.reserveCapacity(count)
    var total = Resources()
    for index in 0..<count {
        let request = Resources(
            ram: Int64.random(in: 2...64, using: &random),
            cpu: Int64.random(in: 1...16, using: &random) * 250,
            gpu: Int64.random(in: 0...3, using: &random) == 0 ? 1 : 0)
        total = total + request
        active.append(
            ActiveDeployment(
                id: Int64(index + 1), priority: Int32.random(in: 0...9, using: &random), seq: Int64(index + 1),
                request: request, isRunning: false))
    }
    // Half of the total demand fits; the greedy pass decides which.
    let capacity = Resources(ram: total.ram / 2, cpu: total.cpu / 2, gpu: max(total.gpu / 2, 1))
    var snapshot = settle(ClusterSnapshot(capacity: capacity, active: active))
    while !small.fits(in: snapshot.available) {
        snapshot.capacity = snapshot.capacity + small
        snapshot = settle(snapshot)
    }
    return snapshot
}

/// Runs `body` repeatedly for about `seconds` and returns nanoseconds per call. `body` returns a number that is
/// summed into `sink` so the optimizer cannot drop the work.
func measure(seconds: Double, sink: inout Int, _ body: () -> Int) -> Double {
    let clock = ContinuousClock()
    // Warm up and calibrate on one call.
    let once = clock.measure { sink &+= body() }
    let perCall = Double(once.components.attoseconds) / 1e18 + Double(once.components.seconds)
    let iterations = max(3, Int(seconds / max(perCall, 1e-9)))
    let elapsed = clock.measure {
        for _ in 0..<iterations { sink &+= body() }
    }
    let total = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return total / Double(iterations) * 1e9
}

var seconds = 0.3
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    if argument == "--seconds", let value = arguments.popFirst().flatMap(Double.init) {
        seconds = value
    } else {
        fatalError("usage: SchedulerBenchmark [--seconds S]")
    }
}

var sink = 0
var rows: [(name: String, count: Int, running: Int, nanoseconds: Double)] = []
for count in [100, 1_000, 10_000] {
    let smallRequest = Resources(ram: 1, cpu: 250, gpu: 0)
    let settled = settledCluster(count: count, room: smallRequest)
    let running = settled.active.lazy.filter(\.isRunning).count
    let top = settled.active.map(\.priority).max() ?? 0
    let nextSeq = Int64(count + 1)

    rows.append(
        (
            "plan(for:) settled, full pass", count, running,
            measure(seconds: seconds, sink: &sink) {
                let plan = Scheduler.plan(for: settled)
                return plan.start.count + plan.preempt.count
            }
        ))

    // Too big for what is free, but higher priority than anything: it preempts.
    let preemptor = ActiveDeployment(
        id: Int64(count + 1), priority: top + 1, seq: nextSeq,
        request: Resources(ram: settled.capacity.ram / 10, cpu: 250, gpu: 0), isRunning: false)
    precondition(!preemptor.request.fits(in: settled.available))
    let withPreemptor = ClusterSnapshot(capacity: settled.capacity, active: settled.active + [preemptor])
    let preemptPlan = Scheduler.plan(for: withPreemptor)
    precondition(preemptPlan.start.contains(preemptor.id) && !preemptPlan.preempt.isEmpty)
    rows.append(
        (
            "plan(for:) + preempting create", count, running,
            measure(seconds: seconds, sink: &sink) {
                let plan = Scheduler.plan(for: withPreemptor)
                return plan.start.count + plan.preempt.count
            }
        ))

    // Small enough to fit in what is free: the fast path.
    let small = ActiveDeployment(
        id: Int64(count + 1), priority: 0, seq: nextSeq, request: smallRequest, isRunning: false)
    precondition(small.request.fits(in: settled.available))
    precondition(Scheduler.plan(adding: small, to: settled) == SchedulingPlan(start: [small.id]))
    rows.append(
        (
            "plan(adding:to:) fits, fast path", count, running,
            measure(seconds: seconds, sink: &sink) {
                Scheduler.plan(adding: small, to: settled).start.count
            }
        ))
}

print("| scheduler micro-benchmark | active | running | ns/plan | plans/s |")
print("|---|---:|---:|---:|---:|")
for row in rows {
    let perSecond = 1e9 / row.nanoseconds
    print("| \(row.name) | \(row.count) | \(row.running) | \(grouped(row.nanoseconds)) | \(grouped(perSecond)) |")
}
// Printed so the optimizer must keep every result.
print("\n(checksum \(sink))")

/// `1234567.8` as `1,234,568`.
func grouped(_ value: Double) -> String {
    let digits = String(Int(value + 0.5))
    var result = ""
    for (index, character) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { result.append(",") }
        result.append(character)
    }
    return result
}
