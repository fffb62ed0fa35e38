import Foundation
import SSH
import Synchronization

/// How SSH reaches a guest's forwarded port: on this machine's loopback,
/// or for a guest on a remote host, through an SSH connection to that host
/// and a forwarded channel to the port on the host's loopback. No guest
/// port is ever opened on a host's public interface.
///
/// `open` may be called from any thread; `close` ends every tunnel.
final class GuestRoute: Sendable {
    let remote: RemoteHost?
    private let tunnels = Mutex<[Tunnel]>([])

    init(remote: RemoteHost?) {
        self.remote = remote
    }

    /// A new session to the guest's SSH port, not yet logged in to the guest.
    ///
    /// - Parameters:
    ///   - port: The guest's forwarded SSH port on its host's loopback.
    ///   - deadline: When to give up.
    ///   - interrupt: Wakes the guest session's waits.
    /// - Returns: The session, handshake done.
    /// - Throws: `SSHError` for the guest's connection; `AirlockError`
    ///   `.hostUnavailable` when the host cannot be reached, its key is not
    ///   the known one, or it will not forward.
    func open(port: Int, deadline: ContinuousClock.Instant, interrupt: Interrupt) throws -> Session {
        guard let remote else {
            return try Session(host: "127.0.0.1", port: port, deadline: deadline, interrupt: interrupt)
        }
        let hostInterrupt = Interrupt()
        let outer: Session
        do {
            outer = try Session(host: remote.address, port: remote.port, deadline: deadline, interrupt: hostInterrupt)
            try outer.verifyKnownHost(remote.address, port: remote.port, knownHostsFile: remote.knownHostsFile)
            guard let keyFile = remote.keyFile else {
                throw AirlockError(
                    .hostUnavailable, "no key to log in to host '\(remote.address)' with",
                    hint: "add keyfile=PATH to the host's URI, or create ~/.ssh/id_ed25519")
            }
            try outer.authenticate(user: remote.user, privateKeyFile: keyFile, deadline: deadline)
        } catch let error as AirlockError {
            throw error
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot reach host '\(remote.address)' over SSH as '\(remote.user)'",
                hint: (error as? SSHError)?.kind == .hostKeyMismatch
                    ? "check the host's key and list it in '\(remote.knownHostsFile)' (ssh-keyscan, then compare "
                        + "fingerprints)" : nil,
                cause: error as? SSHError)
        }
        let tunnel: Tunnel
        do {
            tunnel = try Tunnel(
                through: outer, interrupt: hostInterrupt, toHost: "127.0.0.1", port: port, deadline: deadline)
        } catch {
            outer.close()
            throw AirlockError(
                .hostUnavailable,
                "host '\(remote.address)' would not forward to the guest's port \(port) on its loopback",
                hint: "the host's sshd must allow TCP forwarding for '\(remote.user)' (AllowTcpForwarding)",
                cause: error)
        }
        tunnels.withLock { $0.append(tunnel) }
        do {
            return try Session(socket: tunnel.localSocket, deadline: deadline, interrupt: interrupt)
        } catch {
            tunnel.close()
            throw error
        }
    }

    /// Ends every tunnel this route opened. Safe to call twice.
    func close() {
        let open = tunnels.withLock { tunnels -> [Tunnel] in
            defer { tunnels.removeAll() }
            return tunnels
        }
        for tunnel in open {
            tunnel.close()
        }
    }
}
