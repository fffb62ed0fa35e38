import AirlockLog
import Foundation
import Libvirt
import Synchronization

/// Watches one host for a controller, on a thread of its own: keeps a
/// libvirt connection to it, asks it something every few seconds, and
/// says whether it is healthy and what it can run. A host that stops
/// answering is unhealthy at once and is tried again every few seconds;
/// a slow or dead host never holds up the controller's loop.
final class HostMonitor: @unchecked Sendable {
    // @unchecked: `connection` is touched only by the monitor's thread;
    // what others read sits behind `status`.

    /// What the controller reads.
    struct Status: Sendable {
        var healthy = false
        /// What the host can run, once it has answered.
        var capacity: HostCapacity?
        /// Why it is unhealthy.
        var problem: String?
    }

    let host: JobStore.Host
    private let concurrency: Int
    private let policy: HostCapacity.Policy
    private let logger: Logger
    private let state = Mutex(Status())
    private let stopped = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private var connection: Connection?
    /// Seconds between checks of a healthy host.
    static let interval: TimeInterval = 3

    init(host: JobStore.Host, concurrency: Int, policy: HostCapacity.Policy, logger: Logger) {
        self.host = host
        self.concurrency = concurrency
        self.policy = policy
        self.logger = logger
    }

    var status: Status { state.withLock { $0 } }

    /// Marks the host unhealthy now, before its next check: a job there
    /// just lost it.
    func reportLost(_ why: String) {
        let was = state.withLock { status -> Bool in
            defer {
                status.healthy = false
                status.problem = why
            }
            return status.healthy
        }
        if was {
            logger.warning("host is unhealthy; no job starts there", metadata: ["host": host.name, "error": why])
        }
        wake.signal()
    }

    func start() {
        let thread = Thread { [self] in
            while !stopped.load(ordering: .acquiring) {
                check()
                _ = wake.wait(timeout: .now() + Self.interval)
            }
            connection?.close()
            finished.signal()
        }
        thread.name = "airlock.host.\(host.name)"
        thread.start()
    }

    /// Stops watching. Waits a while for a check in progress; a host that
    /// holds its check longer is left to it (the thread ends with the call).
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wake.signal()
        _ = finished.wait(timeout: .now() + 15)
    }

    /// One check: a call to the host over the kept connection, or a new
    /// connection when there is none.
    private func check() {
        if let connection {
            // A host that vanished may leave the call waiting until libvirt's keepalives give up on it.
            if connection.isAlive, Bounded.run(.seconds(10), { (try? connection.nodeInfo()) != nil }) == true {
                return
            }
            reportLost("the host stopped answering libvirt calls")
            self.connection = nil
            _ = Bounded.run(.seconds(10)) { connection.close() }
        }
        do {
            let opened = try Connection.airlock(uri: host.uri)
            let node: NodeInfo
            do {
                node = try opened.nodeInfo()
            } catch {
                opened.close()
                throw AirlockError(.hostUnavailable, "cannot read the CPUs and memory of '\(host.uri)'", cause: error)
            }
            connection = opened
            let capacity = HostCapacity.of(
                cpus: host.vcpus ?? node.cpus,
                memoryMiB: host.memoryMiB ?? Int(node.memoryKiB / 1024), concurrency: concurrency,
                policy: host.vcpus == nil && host.memoryMiB == nil ? policy : HostCapacity.Policy.exact)
            let was = state.withLock { status -> Bool in
                defer { status = Status(healthy: true, capacity: capacity, problem: nil) }
                return status.healthy
            }
            if !was {
                logger.notice(
                    "host is healthy; jobs start there",
                    metadata: [
                        "host": host.name, "host.uri": host.uri, "capacity.vcpus": "\(capacity.vcpus)",
                        "capacity.memory": "\(capacity.memoryMiB) MiB", "concurrency": "\(capacity.concurrency)",
                    ])
            }
        } catch {
            reportLost("\(error)")
        }
    }
}

/// A quick look at whether a remote host's SSH port answers at all, so
/// that an unreachable or blackholed host fails within seconds rather than
/// after the TCP timeout of the ssh client libvirt starts.
enum HostProbe {
    /// How long a remote host's SSH port has to accept a connection.
    static let connectTimeout: Duration = .seconds(10)

    /// - Throws: `AirlockError` `.hostUnavailable` naming the address when
    ///   a remote host's SSH port does not accept a connection in time.
    static func reachable(_ uri: String) throws(AirlockError) {
        guard let remote = try RemoteHost.parse(uri) else { return }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(remote.address, String(remote.port), &hints, &found) == 0, let entry = found else {
            throw AirlockError(.hostUnavailable, "cannot resolve host '\(remote.address)'")
        }
        defer { freeaddrinfo(found) }
        let fd = socket(entry.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            throw AirlockError(.hostUnavailable, "cannot make a socket", cause: POSIXFailure())
        }
        defer { close(fd) }
        if connect(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0 {
            return
        }
        guard errno == EINPROGRESS else {
            throw AirlockError(
                .hostUnavailable, "host '\(remote.address)' port \(remote.port) refused the connection",
                cause: POSIXFailure())
        }
        var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&descriptor, 1, Int32(connectTimeout.components.seconds * 1000))
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
        guard ready > 0, code == 0 else {
            throw AirlockError(
                .hostUnavailable,
                ready > 0
                    ? "host '\(remote.address)' port \(remote.port): \(String(cString: strerror(code)))"
                    : "host '\(remote.address)' port \(remote.port) did not answer within "
                        + "\(connectTimeout.components.seconds) s")
        }
    }
}
