import CSystem

/// Lets at most `HV_ACCEPTING_WORKERS` of the pool's workers take requests at once. The others wait here before they
/// accept, so requests wait in the listening socket's backlog in the order they came, and the worker let in next takes
/// along every change that arrived meanwhile (`Worker.serve`): larger batches, whose fixed costs are paid fewer times,
/// and fewer PostgreSQL backends queued on one cluster's lock (`docs/decisions.md`, "Fewer workers take requests at
/// once"). A worker leaves as soon as it knows its request is not a change, or once its batch is made.
///
/// Each place is a byte of an anonymous file the master made before forking, taken with a POSIX record lock, which the
/// kernel releases when its worker dies; the worker in scoreboard slot `s` waits for place `s % width`. One that has
/// waited `patienceMilliseconds` accepts without its place, so a partner held up in a change (on a cluster's lock held
/// long, say) never leaves it idle for longer.
struct AcceptGate {
    static let patienceMilliseconds: Int32 = 50
    private let file: Int32
    private let place: off_t
    private var held = false

    /// The place of the worker in `slot` when `width` is less than the pool's `workers`; nil when all may accept.
    init?(file: Int32, width: Int, workers: Int, slot: Int) {
        guard width < workers else { return nil }
        self.file = file
        place = off_t(slot % width)
    }

    /// Waits for the place: until it is free, `patienceMilliseconds` have passed, or a signal arrives.
    mutating func enter() { held = hv_lock_byte(file, place, AcceptGate.patienceMilliseconds) == 0 }

    /// Lets in the next worker waiting for the place, if this one holds it.
    mutating func leave() {
        guard held else { return }
        hv_unlock_byte(file, place)
        held = false
    }
}
