import Foundation
import Libvirt
import Synchronization

/// A host as `airlock host ls` shows it: asked live, each host at once,
/// none for longer than the SSH probe's timeout plus libvirt's answer.
public struct HostReport: Sendable {
    public var host: JobStore.Host
    public var reachable = false
    /// Why the host could not be asked.
    public var problem: String?
    /// `kvm`, `tcg`, or `kvm?` when KVM is offered but no guest has run yet.
    public var accelerator: String?
    /// Airlock guests running there now.
    public var guests: Int?
    /// What guests may use there, and what live jobs leave free of it.
    public var capacity: HostCapacity?
    public var freeVCPUs: Int?
    public var freeMemoryMiB: Int?
    /// Live jobs the store places there.
    public var jobs = 0

    /// Asks every host, in parallel.
    ///
    /// - Parameters:
    ///   - hosts: The hosts.
    ///   - queue: The store and state folder (live jobs, the accelerator each host proved).
    ///   - concurrency: Guests at most per host, as a controller would run.
    ///   - policy: The overcommit a controller would apply.
    /// - Returns: One report per host, in the order given.
    public static func probe(
        _ hosts: [JobStore.Host], queue: JobQueue, concurrency: Int, policy: HostCapacity.Policy = .init()
    ) -> [HostReport] {
        let usage = (try? queue.store.liveUsage()) ?? [:]
        let cache = AcceleratorCache(folder: queue.stateFolder.appendingPathComponent("accel"))
        let reports = Mutex([HostReport?](repeating: nil, count: hosts.count))
        let group = DispatchGroup()
        for (index, host) in hosts.enumerated() {
            group.enter()
            Thread {
                var report = HostReport(host: host)
                let used = usage[host.uri]
                report.jobs = used?.jobs ?? 0
                do {
                    try HostProbe.reachable(host.uri)
                    let connection = try Connection.airlock(uri: host.uri)
                    defer { connection.close() }
                    let node = try connection.nodeInfo()
                    let capabilities = try connection.capabilities()
                    report.reachable = true
                    report.guests = try connection.allDomains().filter { $0.name.hasPrefix("airlock-") }.count
                    let capacity = HostCapacity.of(
                        cpus: host.vcpus ?? node.cpus, memoryMiB: host.memoryMiB ?? Int(node.memoryKiB / 1024),
                        concurrency: concurrency,
                        policy: host.vcpus == nil && host.memoryMiB == nil ? policy : .exact)
                    report.capacity = capacity
                    report.freeVCPUs = capacity.vcpus - (used?.vcpus ?? 0)
                    report.freeMemoryMiB = capacity.memoryMiB - (used?.memoryMiB ?? 0)
                    if let known = cache.lookup(uri: host.uri) {
                        report.accelerator = known.rawValue
                    } else {
                        report.accelerator = capabilities.contains("<domain type='kvm'") ? "kvm?" : "tcg"
                    }
                } catch {
                    report.problem = "\(error)"
                }
                reports.withLock { $0[index] = report }
                group.leave()
            }.start()
        }
        group.wait()
        return reports.withLock { $0.compactMap { $0 } }
    }
}

/// Reads the hosts file that the Terraform module in `terraform/` writes:
/// `{"hosts": [{"name", "uri", "vcpus", "memory", "labels"}]}`.
public enum HostsFile {
    private struct File: Decodable {
        struct Entry: Decodable {
            var name: String
            var uri: String
            var vcpus: Int?
            var memory: String?
            var labels: [String: String]?
        }
        var hosts: [Entry]
    }

    /// The hosts a file lists, checked.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` naming the file and the bad entry.
    public static func load(_ url: URL) throws(AirlockError) -> [JobStore.Host] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw AirlockError(.invalidArgument, "cannot read the hosts file '\(url.path)'", cause: POSIXFailure())
        }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw AirlockError(
                .invalidArgument, "'\(url.path)' is not a hosts file",
                hint: "it holds {\"hosts\": [{\"name\", \"uri\", \"vcpus\", \"memory\", \"labels\"}]}, as "
                    + "'terraform output -raw hosts_file' prints it")
        }
        var hosts: [JobStore.Host] = []
        for (index, entry) in file.hosts.enumerated() {
            var memoryMiB: Int?
            if let memory = entry.memory {
                guard let bytes = Sizes.parse(memory, defaultUnit: 1 << 20) else {
                    throw AirlockError(
                        .invalidArgument, "'\(url.path)': host \(index + 1) has memory '\(memory)', not a size")
                }
                memoryMiB = Int(bytes >> 20)
            }
            let host = JobStore.Host(
                name: entry.name, uri: entry.uri, vcpus: entry.vcpus, memoryMiB: memoryMiB,
                labels: entry.labels ?? [:])
            do {
                try host.validate()
            } catch {
                throw error.within("'\(url.path)': host \(index + 1)")
            }
            hosts.append(host)
        }
        return hosts
    }
}
