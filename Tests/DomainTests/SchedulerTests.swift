import Domain
import Testing

@Suite struct SchedulerTests {
    static let priorityCases: [SchedulingCase] = [
        SchedulingCase(
            desc: "a higher priority preempts the lower one holding its room",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 1, cpu: 8, running: true),
                    .deployment(id: 2, priority: 5, cpu: 5),
                ]),
            expected: SchedulingPlan(start: [2], preempt: [1], preemptedBy: [1: 2])
        ),
        SchedulingCase(
            desc: "only as much is preempted as the higher priority needs",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 1, cpu: 4, running: true),
                    .deployment(id: 2, priority: 1, cpu: 4, running: true),
                    .deployment(id: 3, priority: 5, cpu: 5),
                ]),
            expected: SchedulingPlan(start: [3], preempt: [2], preemptedBy: [2: 3])
        ),
        SchedulingCase(
            desc: "a shortage in one dimension is enough to preempt",
            snapshot: .cluster(
                cpu: 10, gpu: 1,
                [
                    .deployment(id: 1, priority: 1, cpu: 1, gpu: 1, running: true),
                    .deployment(id: 2, priority: 2, cpu: 1, gpu: 1),
                ]),
            expected: SchedulingPlan(start: [2], preempt: [1], preemptedBy: [1: 2])
        ),
        SchedulingCase(
            desc: "nothing is preempted for a deployment that cannot fit even after evicting every lower priority",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 9, cpu: 6, running: true),
                    .deployment(id: 2, priority: 1, cpu: 3, running: true),
                    .deployment(id: 3, priority: 5, cpu: 5),
                ]),
            expected: SchedulingPlan()
        ),
        SchedulingCase(
            desc: "room freed by a completion lets a waiting higher priority preempt a lower one (priority wins)",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 2, priority: 1, cpu: 5, running: true),
                    .deployment(id: 3, priority: 3, cpu: 8),
                ]),
            expected: SchedulingPlan(start: [3], preempt: [2], preemptedBy: [2: 3])
        ),
        SchedulingCase(
            desc: "the extreme priorities order correctly",
            snapshot: .cluster(
                cpu: 1,
                [
                    .deployment(id: 1, priority: .min, cpu: 1, running: true),
                    .deployment(id: 2, priority: .max, cpu: 1),
                ]),
            expected: SchedulingPlan(start: [2], preempt: [1], preemptedBy: [1: 2])
        ),
    ]

    @Test(arguments: priorityCases)
    func higherPriorityPreemptsStrictlyLowerPriorities(_ row: SchedulingCase) {
        #expect(Scheduler.plan(for: row.snapshot) == row.expected)
        #expect(ReferenceScheduler.plan(for: row.snapshot) == row.expected)
    }

    static let victimCases: [SchedulingCase] = [
        SchedulingCase(
            desc: "the lowest priority is evicted before an older higher one",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 1, cpu: 5, running: true),
                    .deployment(id: 2, priority: 2, cpu: 5, running: true),
                    .deployment(id: 3, priority: 9, cpu: 5),
                ]),
            expected: SchedulingPlan(start: [3], preempt: [1], preemptedBy: [1: 3])
        ),
        SchedulingCase(
            desc: "within a priority the newest is evicted first",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 1, cpu: 3, running: true),
                    .deployment(id: 2, priority: 1, cpu: 3, running: true),
                    .deployment(id: 3, priority: 1, cpu: 3, running: true),
                    .deployment(id: 4, priority: 5, cpu: 3),
                ]),
            expected: SchedulingPlan(start: [4], preempt: [3], preemptedBy: [3: 4])
        ),
        SchedulingCase(
            desc: "each victim is named with the last starter ordered before it",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 1, cpu: 4, running: true),
                    .deployment(id: 2, priority: 6, cpu: 4, running: true),
                    .deployment(id: 3, priority: 9, cpu: 7),
                    .deployment(id: 4, priority: 5, cpu: 2),
                ]),
            expected: SchedulingPlan(start: [3, 4], preempt: [2, 1], preemptedBy: [2: 3, 1: 4])
        ),
        SchedulingCase(
            desc: "a victim of a shrunk capacity names no taker",
            snapshot: .cluster(
                cpu: 5,
                [
                    .deployment(id: 1, priority: 1, cpu: 4, running: true),
                    .deployment(id: 2, priority: 1, cpu: 4, running: true),
                ]),
            expected: SchedulingPlan(preempt: [2])
        ),
    ]

    @Test(arguments: victimCases)
    func victimsComeFromTheLowestPriorityAndNewestFirst(_ row: SchedulingCase) {
        #expect(Scheduler.plan(for: row.snapshot) == row.expected)
        #expect(ReferenceScheduler.plan(for: row.snapshot) == row.expected)
    }

    static let equalPriorityCases: [SchedulingCase] = [
        SchedulingCase(
            desc: "an older waiting deployment does not preempt a running one of equal priority",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 5, seq: 1, cpu: 5),
                    .deployment(id: 2, priority: 5, seq: 2, cpu: 8, running: true),
                ]),
            expected: SchedulingPlan()
        ),
        SchedulingCase(
            desc: "among waiting deployments of equal priority the oldest starts first",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 2, priority: 5, seq: 2, cpu: 6),
                    .deployment(id: 1, priority: 5, seq: 1, cpu: 6),
                ]),
            expected: SchedulingPlan(start: [1])
        ),
    ]

    @Test(arguments: equalPriorityCases)
    func equalPriorityNeverPreempts(_ row: SchedulingCase) {
        #expect(Scheduler.plan(for: row.snapshot) == row.expected)
        #expect(ReferenceScheduler.plan(for: row.snapshot) == row.expected)
    }

    static let completionCases: [SchedulingCase] = [
        SchedulingCase(
            desc: "room freed by a completion starts waiting work without preempting",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 2, priority: 1, cpu: 4, running: true),
                    .deployment(id: 3, priority: 5, cpu: 6),
                    .deployment(id: 4, priority: 1, cpu: 6),
                ]),
            expected: SchedulingPlan(start: [3])
        ),
        SchedulingCase(
            desc: "room freed in a single-priority cluster goes to the oldest waiting that fits",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 2, cpu: 5, running: true),
                    .deployment(id: 3, cpu: 6),
                    .deployment(id: 4, cpu: 5),
                ]),
            expected: SchedulingPlan(start: [4])
        ),
    ]

    @Test(arguments: completionCases)
    func completionStartsWaitingWorkWithoutPreempting(_ row: SchedulingCase) {
        #expect(Scheduler.plan(for: row.snapshot) == row.expected)
        #expect(ReferenceScheduler.plan(for: row.snapshot) == row.expected)
    }

    static let backfillCases: [SchedulingCase] = [
        SchedulingCase(
            desc: "small lower-priority work fills the hole a big waiting deployment cannot use",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 5, cpu: 6, running: true),
                    .deployment(id: 2, priority: 5, cpu: 8),
                    .deployment(id: 3, priority: 1, cpu: 3),
                ]),
            expected: SchedulingPlan(start: [3])
        ),
        SchedulingCase(
            desc: "work blocked on gpu does not block work that needs none",
            snapshot: .cluster(
                cpu: 10, gpu: 2,
                [
                    .deployment(id: 1, priority: 5, cpu: 2, gpu: 2, running: true),
                    .deployment(id: 2, priority: 5, cpu: 1, gpu: 1),
                    .deployment(id: 3, priority: 1, cpu: 8),
                ]),
            expected: SchedulingPlan(start: [3])
        ),
        SchedulingCase(
            desc: "backfilled work is preempted once the big deployment fits",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 2, priority: 5, cpu: 8),
                    .deployment(id: 3, priority: 1, cpu: 3, running: true),
                ]),
            expected: SchedulingPlan(start: [2], preempt: [3], preemptedBy: [3: 2])
        ),
    ]

    @Test(arguments: backfillCases)
    func smallerWorkBackfillsWithoutDelayingHigherPriorities(_ row: SchedulingCase) {
        #expect(Scheduler.plan(for: row.snapshot) == row.expected)
        #expect(ReferenceScheduler.plan(for: row.snapshot) == row.expected)
    }

    static let settledCases: [SchedulingCase] = [
        SchedulingCase(desc: "an empty cluster", snapshot: .cluster(cpu: 10, []), expected: SchedulingPlan()),
        SchedulingCase(
            desc: "a full cluster with a queue that fits nowhere",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 1, cpu: 6, running: true),
                    .deployment(id: 2, priority: 9, cpu: 4, running: true),
                    .deployment(id: 3, priority: 5, cpu: 7),
                    .deployment(id: 4, priority: 1, cpu: 1),
                ]),
            expected: SchedulingPlan()
        ),
        SchedulingCase(
            desc: "backfilled work behind a waiting big deployment",
            snapshot: .cluster(
                cpu: 10,
                [
                    .deployment(id: 1, priority: 5, cpu: 6, running: true),
                    .deployment(id: 2, priority: 5, cpu: 8),
                    .deployment(id: 3, priority: 1, cpu: 3, running: true),
                ]),
            expected: SchedulingPlan()
        ),
    ]

    @Test(arguments: settledCases)
    func replanningASettledClusterChangesNothing(_ row: SchedulingCase) {
        #expect(Scheduler.plan(for: row.snapshot) == row.expected)
        #expect(ReferenceScheduler.plan(for: row.snapshot) == row.expected)
    }

    @Test func preemptedDeploymentKeepsItsSeqAndStartsFirstWhenRoomReturns() {
        let cluster = ClusterSnapshot.cluster(
            cpu: 10,
            [
                .deployment(id: 1, priority: 1, cpu: 6, running: true),
                .deployment(id: 2, priority: 1, cpu: 6),
            ])
        let urgent = ActiveDeployment.deployment(id: 3, priority: 9, cpu: 6)

        let preemption = Scheduler.plan(adding: urgent, to: cluster)
        #expect(preemption == SchedulingPlan(start: [3], preempt: [1], preemptedBy: [1: 3]))

        let afterCompletion = cluster.adding(urgent).applying(preemption).removing(id: 3)
        #expect(Scheduler.plan(for: afterCompletion) == SchedulingPlan(start: [1]))
    }

    static let capacityCases: [(desc: String, request: Resources, refused: Bool)] = [
        ("equal to the total in every dimension", Resources(ram: 8, cpu: 4000, gpu: 1), false),
        ("nothing at all", Resources(), false),
        ("more ram than the total", Resources(ram: 9, cpu: 4000, gpu: 1), true),
        ("one millicore more than the total", Resources(ram: 8, cpu: 4001, gpu: 1), true),
        ("more gpu than the total", Resources(ram: 8, cpu: 4000, gpu: 2), true),
    ]

    @Test(arguments: capacityCases)
    func requestExceedingTheTotalIsRefused(_ row: (desc: String, request: Resources, refused: Bool)) {
        let capacity = Resources(ram: 8, cpu: 4000, gpu: 1)
        if row.refused {
            #expect(throws: SchedulingError.insufficientCapacity) {
                try Scheduler.validate(row.request, capacity: capacity)
            }
        } else {
            #expect(throws: Never.self) { try Scheduler.validate(row.request, capacity: capacity) }
        }
    }

    @Test func schedulingOrderIsPriorityThenRunningThenSeq() {
        let shuffled: [ActiveDeployment] = [
            .deployment(id: 5, priority: 1, seq: 1, running: true),
            .deployment(id: 3, priority: 5, seq: 4),
            .deployment(id: 1, priority: 9, seq: 9),
            .deployment(id: 4, priority: 5, seq: 5),
            .deployment(id: 2, priority: 5, seq: 7, running: true),
        ]
        #expect(shuffled.sorted { $0.schedulesBefore($1) }.map(\.id) == [1, 2, 3, 4, 5])
    }

    @Test func newDeploymentThatFitsInAvailableSimplyStarts() {
        let settled = ClusterSnapshot.cluster(
            cpu: 10,
            [
                .deployment(id: 1, priority: 1, cpu: 6, running: true),
                .deployment(id: 2, priority: 9, cpu: 5),
            ])
        #expect(settled.available == Resources(cpu: 4))
        #expect(Scheduler.plan(adding: .deployment(id: 3, cpu: 4), to: settled) == SchedulingPlan(start: [3]))
        #expect(Scheduler.plan(adding: .deployment(id: 3, cpu: 5), to: settled) == SchedulingPlan())
    }

    static let creationCases: [(desc: String, priority: Int32, cpu: Int64, starts: Bool)] = [
        ("fits beside the equal and higher priorities", 5, 3, true),
        ("needs room held by an equal priority", 5, 4, false),
        ("fits after evicting the lower priority", 6, 7, true),
        ("exceeds what the higher priorities leave", 6, 8, false),
    ]

    @Test(arguments: creationCases)
    func creationStartsOnlyWhenItFitsAfterEvictingLowerPriorities(
        _ row: (desc: String, priority: Int32, cpu: Int64, starts: Bool)
    ) {
        // Running: priority 9 holds 3, priority 5 holds 4, priority 1 holds 2, of 10.
        let atOrAbove = Resources(cpu: row.priority <= 5 ? 7 : 3)
        let starts = Scheduler.startsWhenCreated(
            Resources(cpu: row.cpu),
            capacity: Resources(cpu: 10),
            runningAtOrAbovePriority: atOrAbove
        )
        #expect(starts == row.starts)
    }

    @Test func headroomCountsOnlyWhatThePassAdmitsUpToThePosition() {
        let snapshot = ClusterSnapshot.cluster(
            cpu: 10,
            [
                .deployment(id: 1, priority: 9, cpu: 3, running: true),
                .deployment(id: 2, priority: 5, cpu: 9),
                .deployment(id: 3, priority: 1, cpu: 4, running: true),
            ])
        #expect(Scheduler.headroom(for: snapshot, after: .deployment(id: 2, priority: 5, cpu: 9)) == Resources(cpu: 7))
        #expect(Scheduler.headroom(for: snapshot, after: .deployment(id: 9, priority: 0)) == Resources(cpu: 3))
    }

    @Test func resourcesAddSubtractAndFitInEveryDimension() {
        let a = Resources(ram: 1, cpu: 2, gpu: 3)
        let b = Resources(ram: 4, cpu: 5, gpu: 6)
        #expect(a + b == Resources(ram: 5, cpu: 7, gpu: 9))
        #expect(b - a == Resources(ram: 3, cpu: 3, gpu: 3))
        #expect(a.fits(in: b))
        #expect(!b.fits(in: a))
        #expect(!Resources(ram: 1, cpu: 9, gpu: 1).fits(in: b))
        #expect(Resources(ram: .max, cpu: .max, gpu: .max).fits(in: Resources(ram: .max, cpu: .max, gpu: .max)))
    }
}
