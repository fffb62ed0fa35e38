import Libvirt

extension Connection {
    /// Connects to libvirt, turning a failure into Airlock's error with the
    /// usual hint on how to start libvirtd.
    static func airlock(uri: String) throws(AirlockError) -> Connection {
        // A remote host whose SSH port does not answer would hold the open for minutes.
        try HostProbe.reachable(uri)
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
