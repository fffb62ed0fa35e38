import Foundation

/// How Airlock reaches a remote libvirt host's guests: over SSH to the
/// host, then a forwarded channel to the guest's port on the host's
/// loopback. Read from the host's `qemu+ssh://` URI, so that libvirt and
/// Airlock use the same account, key and known hosts.
public struct RemoteHost: Sendable, Equatable {
    public var user: String
    /// The host name or address, as the URI gives it.
    public var address: String
    public var port: Int
    /// The private key to log in with (the URI's `keyfile`), else the
    /// first of `~/.ssh/id_ed25519`, `id_ecdsa` and `id_rsa` that exists.
    public var keyFile: String?
    /// The URI's `known_hosts`, else `~/.ssh/known_hosts`. The host's key
    /// must be listed there: nothing is trusted on first use.
    public var knownHostsFile: String

    /// The remote host a libvirt URI names, or nil for a host on this machine.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` for a remote URI that does
    ///   not use SSH, or that Airlock cannot read.
    public static func parse(_ uri: String, home: String = NSHomeDirectory()) throws(AirlockError) -> RemoteHost? {
        guard let components = URLComponents(string: uri), let scheme = components.scheme else {
            throw AirlockError(
                .invalidArgument, "'\(uri)' is not a libvirt URI",
                hint: "for example qemu:///system, or qemu+ssh://user@host/system for a remote host")
        }
        let host = components.host ?? ""
        if host.isEmpty {
            return nil
        }
        guard scheme.hasSuffix("+ssh") else {
            throw AirlockError(
                .invalidArgument,
                "host '\(host)' is reached as '\(scheme)'; Airlock reaches a remote host's guests through SSH",
                hint: "use a qemu+ssh://user@\(host)/system URI")
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let ssh = URL(fileURLWithPath: home).appendingPathComponent(".ssh")
        let keyFile =
            query["keyfile"]
            ?? ["id_ed25519", "id_ecdsa", "id_rsa"].map { ssh.appendingPathComponent($0).path }
            .first { FileManager.default.isReadableFile(atPath: $0) }
        return RemoteHost(
            user: components.user ?? NSUserName(), address: host, port: components.port ?? 22, keyFile: keyFile,
            knownHostsFile: query["known_hosts"] ?? ssh.appendingPathComponent("known_hosts").path)
    }
}
