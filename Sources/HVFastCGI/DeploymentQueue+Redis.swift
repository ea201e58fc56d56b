import Domain
import Glibc

/// The queue snapshot of each cluster in Redis, and its encoding (the one place that knows it).
///
/// Per cluster: `hv:q:<id>:running` and `hv:q:<id>:pending`, sorted sets whose members sort lexicographically in
/// scheduling order, and `hv:q:<id>:meta`, a hash with `version` and `available_ram/cpu/gpu`. A member is
/// `<8 hex: Int32.max − priority><16 hex: seq>:<id>:<ram>:<cpu millicores>:<gpu>`.
///
/// Writes are differences applied by a Lua script that compares versions atomically: an older change never
/// replaces a newer snapshot, and a change that cannot be applied (no snapshot yet, or a predecessor that never came)
/// makes the writer rebuild the whole snapshot from PostgreSQL instead.
struct DeploymentQueue {
    /// What one committed change did to a cluster's queue.
    struct Change {
        var cluster: Int64
        var version: Int64
        var available: Resources
        var addedRunning: [ActiveDeployment] = []
        var addedPending: [ActiveDeployment] = []
        var removedRunning: [ActiveDeployment] = []
        var removedPending: [ActiveDeployment] = []
    }

    let redis: RedisConnection
    let log: Log
    /// Clusters whose change this worker could not publish (Redis was unreachable); rebuilt at its next publish.
    let unpublished = ClusterSet()

    /// A worker's set of cluster ids (the queue value itself is shared by every handler of the worker).
    final class ClusterSet {
        var ids: Set<Int64> = []
    }

    /// How long a snapshot may stay behind changes that arrived ahead of a missing predecessor before the missing
    /// one counts as lost: far above the time between a commit and its publish, even under load.
    static let lostAfterMilliseconds = 1000

    /// Running set, pending set, meta hash, and the hash of changes that arrived ahead of their predecessors.
    static func keys(_ cluster: Int64) -> [String] {
        ["hv:q:\(cluster):running", "hv:q:\(cluster):pending", "hv:q:\(cluster):meta", "hv:q:\(cluster):early"]
    }

    static func member(_ deployment: ActiveDeployment) -> String {
        let request = deployment.request
        return key(priority: deployment.priority, seq: deployment.seq)
            + ":\(deployment.id):\(request.ram):\(request.cpu):\(request.gpu)"
    }

    /// The first 24 characters of the member of a deployment of `priority` and `seq`: its place in scheduling order
    /// among the members of one set.
    static func key(priority: Int32, seq: Int64) -> String {
        priorityKey(priority) + hex(UInt64(seq), width: 16)
    }

    /// The first 8 characters of the members of `priority`: higher priorities sort first.
    static func priorityKey(_ priority: Int32) -> String {
        hex(UInt64(Int64(Int32.max) - Int64(priority)), width: 8)
    }

    private static func hex(_ value: UInt64, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// Lua shared by both scripts: applying one change's arguments (laid out as `apply`'s ARGV), and then every
    /// buffered successor that is now consecutive. KEYS: running, pending, meta, buffered changes.
    private static let luaPrelude = """
        local function applyChange(args)
          local i = 5
          local function each(key, remove)
            local n = tonumber(args[i]); i = i + 1
            for _ = 1, n do
              if remove then redis.call('ZREM', key, args[i]) else redis.call('ZADD', key, 0, args[i]) end
              i = i + 1
            end
          end
          each(KEYS[1], true); each(KEYS[1], false); each(KEYS[2], true); each(KEYS[2], false)
          redis.call('HSET', KEYS[3], 'version', args[1], 'available_ram', args[2], 'available_cpu', args[3],
                     'available_gpu', args[4])
        end
        local function drainBuffered(current)
          while true do
            local field = string.format('%d', current + 1)
            local stored = redis.call('HGET', KEYS[4], field)
            if not stored then return end
            redis.call('HDEL', KEYS[4], field)
            applyChange(cjson.decode(stored))
            current = current + 1
          end
        end

        """

    /// Applies a change that directly follows the snapshot's version (1). An older change is ignored (0). A newer
    /// one is buffered until its predecessors arrive (2), or, when the snapshot cannot catch up that way, also asks
    /// for a rebuild (-1): there is no snapshot to patch (only version 1 starts one), too many changes are waiting,
    /// or the snapshot has been behind them for `lostAfterMilliseconds` (the predecessor was lost). How long is kept
    /// in the meta hash as `behind` = `<version>:<milliseconds>`, set when a change first waits behind that version;
    /// a mark naming an older version is stale by construction, so nothing has to clear it.
    private static let applyScript = RedisScript(
        luaPrelude + """
            local stored = redis.call('HGET', KEYS[3], 'version')
            local current = tonumber(stored or '0')
            local version = tonumber(ARGV[1])
            if current >= version then return 0 end
            if current == version - 1 then
              applyChange(ARGV)
              drainBuffered(version)
              return 1
            end
            redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(ARGV))
            redis.call('EXPIRE', KEYS[4], 300)
            if not stored or redis.call('HLEN', KEYS[4]) > 256 then return -1 end
            local clock = redis.call('TIME')
            local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
            local markedVersion, since = string.match(redis.call('HGET', KEYS[3], 'behind') or '', '^(%d+):(%d+)$')
            if tonumber(markedVersion) ~= current then
              redis.call('HSET', KEYS[3], 'behind', string.format('%d:%d', current, now))
            elseif now - tonumber(since) > \(lostAfterMilliseconds) then
              return -1
            end
            return 2
            """)

    /// Replaces the snapshot with staged keys only if it is older than the staged one (or as old, when ARGV[5] is 1;
    /// no snapshot is older than any, so a cluster that never changed gets its version-0 snapshot too), then applies
    /// the buffered changes that follow it. KEYS: running, pending, meta, buffered, staged running, staged
    /// pending.
    private static let swapScript = RedisScript(
        luaPrelude + """
            local current = tonumber(redis.call('HGET', KEYS[3], 'version') or '-1')
            local version = tonumber(ARGV[1])
            if current > version or (current == version and ARGV[5] ~= '1') then
              redis.call('DEL', KEYS[5], KEYS[6])
              return 0
            end
            redis.call('DEL', KEYS[1], KEYS[2])
            if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('RENAME', KEYS[5], KEYS[1]) end
            if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('RENAME', KEYS[6], KEYS[2]) end
            redis.call('HSET', KEYS[3], 'version', ARGV[1], 'available_ram', ARGV[2], 'available_cpu', ARGV[3],
                       'available_gpu', ARGV[4])
            for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
              if tonumber(field) <= version then redis.call('HDEL', KEYS[4], field) end
            end
            drainBuffered(version)
            return 1
            """)

    /// Publishes committed changes, in one round trip unless a snapshot needs rebuilding. Never throws: Redis is a
    /// cache.
    ///
    /// Workers publish after their commit, outside the cluster's lock, so changes can reach Redis out of order: a
    /// change that arrives early waits in Redis for its predecessors, which apply it when they come, and the worker
    /// goes on at once. A snapshot that cannot catch up that way (see `applyScript`) is rebuilt from PostgreSQL, and
    /// so is every cluster whose change this worker failed to publish, once Redis answers again.
    func publish(_ changes: [Change], rebuildFrom database: Database) {
        guard !changes.isEmpty else { return }
        func failed(_ cluster: Int64, _ error: any Error) {
            unpublished.ids.insert(cluster)
            log.warning("queue snapshot not published", ["cluster_id": String(cluster), "error": "\(error)"])
        }
        let replies: [Result<RedisReply, RedisError>]
        do {
            for cluster in unpublished.ids {
                try rebuildOnce(cluster, from: database)
                unpublished.ids.remove(cluster)
            }
            replies = try redis.evaluate(
                DeploymentQueue.applyScript,
                calls: changes.map { (DeploymentQueue.keys($0.cluster), arguments(of: $0)) })
        } catch {
            for change in changes { failed(change.cluster, error) }
            return
        }
        for (change, reply) in zip(changes, replies) {
            do {
                if try reply.get().integer == -1 { try rebuildOnce(change.cluster, from: database) }
            } catch {
                failed(change.cluster, error)
            }
        }
    }

    /// Rebuilds unless another rebuild of the cluster is under way (under load many workers can find the same gap, and
    /// a rebuild reads the whole queue); that one also applies the changes buffered after what it read.
    private func rebuildOnce(_ cluster: Int64, from database: Database) throws {
        let guardKey = DeploymentQueue.keys(cluster)[2] + ":rebuilding"
        // Expires in case this worker dies mid-rebuild.
        guard try redis.command(["SET", guardKey, "1", "NX", "EX", "30"]) == .status("OK") else { return }
        defer { _ = try? redis.command(["DEL", guardKey]) }
        try rebuild(cluster, from: database)
    }

    /// `applyScript`'s arguments for `change`.
    private func arguments(of change: Change) -> [String] {
        var arguments = [
            String(change.version), String(change.available.ram), String(change.available.cpu),
            String(change.available.gpu),
        ]
        for group in [change.removedRunning, change.addedRunning, change.removedPending, change.addedPending] {
            arguments.append(String(group.count))
            arguments += group.map(DeploymentQueue.member)
        }
        return arguments
    }

    /// Writes the whole snapshot of `cluster` as PostgreSQL has it now (one consistent read), staged under temporary
    /// keys and swapped in only if nothing newer was published meanwhile. `evenAtSameVersion` replaces a snapshot that
    /// names the same version too (`hvctl`: its content is what is wrong).
    ///
    /// - Throws: `RedisError`, or `ServiceUnavailable` when PostgreSQL cannot be read.
    func rebuild(_ cluster: Int64, from database: Database, evenAtSameVersion: Bool = false) throws {
        guard let record = try database.run({ try ClusterRecord.read(cluster, $0) }) else { return }
        let keys = DeploymentQueue.keys(cluster)
        // Private staging keys: rebuilds of one cluster by several workers must not share them.
        let token = "\(getpid()).\(monotonicSeconds())"
        let staged = [keys[0] + ":staged:" + token, keys[1] + ":staged:" + token]
        var batches: [[String]] = [[], []]
        func flush(_ index: Int) throws {
            guard !batches[index].isEmpty else { return }
            var arguments = ["ZADD", staged[index]]
            for member in batches[index] { arguments += ["0", member] }
            _ = try redis.command(arguments)
            // A worker that dies mid-rebuild leaves nothing behind for long.
            _ = try redis.command(["EXPIRE", staged[index], "60"])
            batches[index].removeAll(keepingCapacity: true)
        }
        for deployment in record.active {
            let index = deployment.isRunning ? 0 : 1
            batches[index].append(DeploymentQueue.member(deployment))
            if batches[index].count == 1000 { try flush(index) }
        }
        try flush(0)
        try flush(1)
        let available = record.available
        _ = try redis.evaluate(
            DeploymentQueue.swapScript, keys: keys + staged,
            arguments: [
                String(record.version), String(available.ram), String(available.cpu), String(available.gpu),
                evenAtSameVersion ? "1" : "0",
            ])
        log.info("queue snapshot rebuilt", ["cluster_id": String(cluster), "version": String(record.version)])
    }

    /// A place in scheduling order: that of the last deployment of a page, to read the next page after it.
    struct Cursor: Equatable {
        var priority: Int32
        var seq: Int64
        var running: Bool

        /// The members' key of the place and `R` or `P`: opaque to clients.
        var text: String { DeploymentQueue.key(priority: priority, seq: seq) + (running ? "R" : "P") }

        init?(_ text: String) {
            guard let last = text.last, last == "R" || last == "P",
                let place = DeploymentQueue.place(ofKey: text.dropLast())
            else { return nil }
            (priority, seq, running) = (place.priority, place.seq, last == "R")
        }

        init(_ deployment: ActiveDeployment) {
            (priority, seq, running) = (deployment.priority, deployment.seq, deployment.isRunning)
        }

        /// Whether `deployment` comes after this place in scheduling order.
        func precedes(_ deployment: ActiveDeployment) -> Bool {
            ActiveDeployment(id: 0, priority: priority, seq: seq, request: Resources(), isRunning: running)
                .schedulesBefore(deployment)
        }
    }

    /// One page of a snapshot: deployments in scheduling order (running before pending among equals), each pending one
    /// with its 1-based place in the queue.
    struct Page {
        var version: Int64
        var available: Resources
        var runningCount: Int64
        var pendingCount: Int64
        var entries: [(deployment: ActiveDeployment, position: Int64?)]
        /// Where the next page starts; nil on the last page.
        var next: Cursor?
    }

    /// Reads both sets after the cursor (`limit + 1` of each is enough to merge `limit + 1`), the meta hash, the set
    /// sizes and how many pending members sort before the pending bound, atomically. False when there is no snapshot.
    /// KEYS: running, pending, meta. ARGV: running bound, pending bound (`ZRANGE … BYLEX` forms), count.
    private static let pageScript = RedisScript(
        """
        local version = redis.call('HGET', KEYS[3], 'version')
        if not version then return false end
        local available = redis.call('HMGET', KEYS[3], 'available_ram', 'available_cpu', 'available_gpu')
        local before = 0
        if ARGV[2] ~= '-' then before = redis.call('ZLEXCOUNT', KEYS[2], '-', '(' .. string.sub(ARGV[2], 2)) end
        return {version, available[1], available[2], available[3], redis.call('ZCARD', KEYS[1]),
                redis.call('ZCARD', KEYS[2]), before,
                redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0, ARGV[3]),
                redis.call('ZRANGE', KEYS[2], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, ARGV[3])}
        """)

    /// Removes a deleted cluster's snapshot. Never throws: cluster ids are never reused, so a snapshot left behind
    /// while Redis is down is only unused memory (logged).
    func forget(_ cluster: Int64) {
        do {
            _ = try redis.command(["DEL"] + DeploymentQueue.keys(cluster))
        } catch {
            log.warning(
                "queue snapshot of a deleted cluster not removed", ["cluster_id": String(cluster), "error": "\(error)"])
        }
    }

    /// What a read takes from a snapshot instead of counting in PostgreSQL: the sizes of its sets, and how many pending
    /// deployments sort before a place.
    struct Counts {
        var running: Int64
        var pending: Int64
        var pendingAhead: Int64
    }

    /// `Counts` if the snapshot is at `version`. KEYS: running, pending, meta. ARGV: version, the key of the place
    /// (empty: none).
    private static let countsScript = RedisScript(
        """
        if redis.call('HGET', KEYS[3], 'version') ~= ARGV[1] then return false end
        local ahead = 0
        if ARGV[2] ~= '' then ahead = redis.call('ZLEXCOUNT', KEYS[2], '-', '(' .. ARGV[2]) end
        return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), ahead}
        """)

    /// The counts as the snapshot of `version` has them, with the pending deployments before the place (`priority`,
    /// `seq`) in scheduling order; nil when the snapshot is at another version (or missing, or Redis does not
    /// answer): the caller then counts in PostgreSQL, in the snapshot it read `version` from.
    func counts(of cluster: Int64, atVersion version: Int64, ahead place: (priority: Int32, seq: Int64)? = nil)
        -> Counts?
    {
        let reply = try? redis.evaluate(
            DeploymentQueue.countsScript, keys: Array(DeploymentQueue.keys(cluster).prefix(3)),
            arguments: [String(version), place.map { DeploymentQueue.key(priority: $0.priority, seq: $0.seq) } ?? ""])
        guard case .array(let parts) = reply, parts.count == 3, let running = parts[0].integer,
            let pending = parts[1].integer, let ahead = parts[2].integer
        else { return nil }
        return Counts(running: running, pending: pending, pendingAhead: ahead)
    }

    /// Up to `limit` deployments of the cluster's snapshot after `cursor`; nil when the cluster has no snapshot.
    ///
    /// Members sort by their 24-character key, so "every member after key K" is `[K` + `g` (a letter above every hex
    /// digit): it orders after each member that starts with K and before every larger key. Running deployments go
    /// first among equal priorities, so after a running cursor every pending one of its priority follows, and after a
    /// pending cursor no running one of its priority does.
    func page(_ cluster: Int64, after cursor: Cursor?, limit: Int) throws(RedisError) -> Page? {
        var bounds = ["-", "-"]
        if let cursor {
            let key = DeploymentQueue.key(priority: cursor.priority, seq: cursor.seq)
            let priorityKey = DeploymentQueue.priorityKey(cursor.priority)
            bounds = cursor.running ? ["[\(key)g", "[\(priorityKey)"] : ["[\(priorityKey)g", "[\(key)g"]
        }
        let keys = DeploymentQueue.keys(cluster)
        let reply = try redis.evaluate(
            DeploymentQueue.pageScript, keys: Array(keys.prefix(3)), arguments: bounds + [String(limit + 1)])
        guard case .array(let parts) = reply, parts.count == 9, case .array(let running) = parts[7],
            case .array(let pending) = parts[8]
        else { return nil }
        // The meta hash's values come back as strings: Lua's numbers are doubles and would round amounts above 2^53.
        func int(_ part: RedisReply) -> Int64 {
            switch part {
            case .integer(let value): value
            case .string(let text): Int64(text) ?? 0
            default: 0
            }
        }
        func decode(_ members: [RedisReply], running: Bool) -> [ActiveDeployment] {
            members.compactMap {
                if case .string(let member) = $0 { DeploymentQueue.deployment(member, running: running) } else { nil }
            }
        }
        var merged = (decode(running, running: true) + decode(pending, running: false)).sorted {
            $0.schedulesBefore($1)
        }
        let more = merged.count > limit
        merged = Array(merged.prefix(limit))
        var position = int(parts[6])
        return Page(
            version: int(parts[0]), available: Resources(ram: int(parts[1]), cpu: int(parts[2]), gpu: int(parts[3])),
            runningCount: int(parts[4]), pendingCount: int(parts[5]),
            entries: merged.map { deployment in
                guard !deployment.isRunning else { return (deployment, nil) }
                position += 1
                return (deployment, position)
            }, next: more ? merged.last.map(Cursor.init) : nil)
    }

    /// The page `page(_:after:limit:)` would read, from a whole cluster as PostgreSQL has it: what the queue view
    /// answers while Redis is down (reading every active deployment, as a snapshot rebuild does).
    static func page(of record: ClusterRecord, after cursor: Cursor?, limit: Int) -> Page {
        var entries: [(deployment: ActiveDeployment, position: Int64?)] = []
        var pending: Int64 = 0
        for deployment in record.active.sorted(by: { $0.schedulesBefore($1) }) {
            if !deployment.isRunning { pending += 1 }
            guard cursor?.precedes(deployment) ?? true else { continue }
            entries.append((deployment, deployment.isRunning ? nil : pending))
            if entries.count > limit { break }
        }
        let running = Int64(record.active.filter(\.isRunning).count)
        return Page(
            version: record.version, available: record.available, runningCount: running,
            pendingCount: Int64(record.active.count) - running, entries: Array(entries.prefix(limit)),
            next: entries.count > limit ? Cursor(entries[limit - 1].deployment) : nil)
    }

    /// Decodes a member (see the type's documentation); nil when it is not one. Splits UTF-8 bytes, not
    /// `Character`s: a queue page decodes a hundred members, and grapheme breaking was most of its cost.
    static func deployment(_ member: String, running: Bool) -> ActiveDeployment? {
        let fields = member.utf8.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false).map(
            Substring.init)
        guard fields.count == 5, let place = place(ofKey: fields[0]), let id = Int64(fields[1]),
            let ram = Int64(fields[2]), let cpu = Int64(fields[3]), let gpu = Int64(fields[4])
        else { return nil }
        return ActiveDeployment(
            id: id, priority: place.priority, seq: place.seq, request: Resources(ram: ram, cpu: cpu, gpu: gpu),
            isRunning: running)
    }

    /// The priority and `seq` a member key (`key(priority:seq:)`: 24 lowercase hex digits) names; nil otherwise.
    static func place(ofKey key: Substring) -> (priority: Int32, seq: Int64)? {
        let bytes = key.utf8
        let isHexDigit = { (byte: UInt8) in (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte) }
        guard bytes.count == 24, bytes.allSatisfy(isHexDigit) else { return nil }
        let middle = bytes.index(bytes.startIndex, offsetBy: 8)
        guard let rank = Int64(Substring(bytes[..<middle]), radix: 16),
            let seq = Int64(Substring(bytes[middle...]), radix: 16)
        else { return nil }
        return (Int32(Int64(Int32.max) - rank), seq)
    }
}
