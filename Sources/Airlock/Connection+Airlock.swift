import Libvirt

extension Connection {
    /// How long a remote host has to answer libvirt's open: its SSH port may
    /// accept and then say nothing (a stopped sshd), which libvirt would
    /// wait on for ever.
    static let remoteOpenLimit: Duration = .seconds(30)

    /// Connects to libvirt, turning a failure into Airlock's error with the
    /// usual hint on how to start libvirtd.
    static func airlock(uri: String) throws(AirlockError) -> Connection {
        guard (try? RemoteHost.parse(uri)) != nil else {
            return try open(uri)
        }
        // A remote host whose SSH port does not answer would hold the open for minutes.
        try HostProbe.reachable(uri)
        let opened = Bounded.run(remoteOpenLimit) { () -> Result<Connection, AirlockError> in
            do throws(AirlockError) {
                return .success(try open(uri))
            } catch {
                return .failure(error)
            }
        }
        guard let opened else {
            throw AirlockError(
                .hostUnavailable,
                "host '\(uri)' did not answer libvirt within \(remoteOpenLimit.components.seconds) s")
        }
        return try opened.get()
    }

    private static func open(_ uri: String) throws(AirlockError) -> Connection {
        do {
            return try Connection(uri: uri)
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot connect to libvirt at '\(uri)'",
                hint: "start libvirtd (as root: 'setsid /usr/sbin/libvirtd -d', or 'systemctl start libvirtd') "
                    + "or pass another URI with --connect",
                cause: error)
        }
    }
}
