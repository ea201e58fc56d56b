extension Scheduler {
    /// Why a pending deployment waits, in words: every dimension in which its `request` exceeds `free`, what the
    /// deployments ahead of it in scheduling order leave of the capacity, e.g.
    /// `"insufficient gpu: needs 4, 2 free after the deployments ahead of it"` (several joined by `; `). Nil when
    /// nothing is short.
    ///
    /// In a settled cluster the deployments ahead of a pending one that hold resources are exactly the running ones
    /// of its priority or higher (running goes first among equals, and nothing pending ahead of it runs), so `free`
    /// is the capacity minus their requests, and the greedy pass left the deployment out because its request does
    /// not fit there: the reason names at least one dimension.
    public static func pendingReason(request: Resources, free: Resources) -> String? {
        let integer: (Int64) -> String = { String($0) }
        let dimensions: [(name: String, needs: Int64, free: Int64, text: (Int64) -> String)] = [
            ("ram", request.ram, free.ram, integer), ("cpu", request.cpu, free.cpu, JSONNumber.text(millicores:)),
            ("gpu", request.gpu, free.gpu, integer),
        ]
        let short = dimensions.filter { $0.needs > $0.free }
        guard !short.isEmpty else { return nil }
        return short.map { "insufficient \($0.name): needs \($0.text($0.needs)), \($0.text($0.free)) free" }
            .joined(separator: "; ") + " after the deployments ahead of it"
    }
}
