import Foundation
import Libvirt

/// How much a controller runs at once on one host: a number of guests, and
/// the vCPUs and memory all of them together may have.
public struct HostCapacity: Sendable, Equatable {
    public var concurrency: Int
    public var vcpus: Int
    public var memoryMiB: Int

    public init(concurrency: Int, vcpus: Int, memoryMiB: Int) {
        self.concurrency = concurrency
        self.vcpus = vcpus
        self.memoryMiB = memoryMiB
    }

    /// How far guests may oversubscribe the host.
    public struct Policy: Sendable, Equatable {
        /// Guest vCPUs per host CPU. 1 by default: under TCG emulation each
        /// vCPU wants a whole host core, and more starves every guest's boot.
        public var cpuOvercommit = 1.0
        /// Guest memory per byte of host memory left after the reserve.
        public var memoryOvercommit = 1.0
        /// Host memory never given to guests (QEMU itself, libvirt, Airlock).
        public var reservedMemoryMiB: Int?

        public init() {}

        /// No reserve and no overcommit: for a host whose size an operator
        /// gave as what guests may use.
        static let exact: Policy = {
            var policy = Policy()
            policy.reservedMemoryMiB = 0
            return policy
        }()

        /// The reserve used when none is set: a tenth of the host, at most 1 GiB.
        func reserve(forHostMiB total: Int) -> Int {
            reservedMemoryMiB ?? min(1024, total / 10)
        }
    }

    /// The capacity of a host with `cpus` and `memoryMiB`, under `policy`.
    public static func of(cpus: Int, memoryMiB: Int, concurrency: Int, policy: Policy) -> HostCapacity {
        let usable = max(0, memoryMiB - policy.reserve(forHostMiB: memoryMiB))
        return HostCapacity(
            concurrency: concurrency, vcpus: Int((Double(cpus) * policy.cpuOvercommit).rounded(.down)),
            memoryMiB: Int((Double(usable) * policy.memoryOvercommit).rounded(.down)))
    }

    /// Asks libvirt what the host at `uri` has.
    ///
    /// - Throws: `AirlockError` `.hostUnavailable` when libvirt cannot be reached.
    public static func measure(uri: String, concurrency: Int, policy: Policy) throws(AirlockError) -> HostCapacity {
        let connection = try Connection.airlock(uri: uri)
        defer { connection.close() }
        do {
            let node = try connection.nodeInfo()
            return of(cpus: node.cpus, memoryMiB: Int(node.memoryKiB / 1024), concurrency: concurrency, policy: policy)
        } catch {
            throw AirlockError(.hostUnavailable, "cannot read the CPUs and memory of '\(uri)'", cause: error)
        }
    }

    /// This machine's capacity, read without libvirt, for checks made when
    /// no controller has said what it schedules against.
    public static func thisMachine(concurrency: Int, policy: Policy) -> HostCapacity {
        let cpus = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let pages = Int(sysconf(Int32(_SC_PHYS_PAGES)))
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        return of(cpus: cpus, memoryMiB: (pages * pageSize) >> 20, concurrency: concurrency, policy: policy)
    }

    /// Why a job of `vcpus` and `memoryMiB` can never run within this
    /// capacity, or nil when it can.
    public func refusal(vcpus: Int, memoryMiB: Int) -> String? {
        if vcpus > self.vcpus {
            return "it asks for \(vcpus) vCPUs and the host gives guests at most \(self.vcpus)"
        }
        if memoryMiB > self.memoryMiB {
            return "it asks for \(memoryMiB) MiB of memory and the host gives guests at most \(self.memoryMiB) MiB"
        }
        return nil
    }
}
