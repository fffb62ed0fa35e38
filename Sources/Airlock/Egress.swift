import AirlockLog
import Foundation

/// What a job's guest may reach on the network.
///
/// - `none`: nothing, the host included (QEMU's `restrict=on`); only
///   Airlock's own SSH comes in.
/// - `allow`: the named endpoints only. The guest's SSH server listens on
///   the guest's 127.0.0.1 at each endpoint's port and hands every
///   connection to Airlock over the job's SSH connection; Airlock connects
///   to the endpoint from the host. The guest's network stays restricted.
/// - `open`: QEMU's user-mode network without restriction: any address,
///   the host's loopback services (as 10.0.2.2) included.
public enum Egress: Sendable, Equatable, CustomStringConvertible {
    case none
    case allow([Endpoint])
    case open

    /// One `HOST:PORT` a guest may reach.
    public struct Endpoint: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
        /// An IPv4 address, an IPv6 address (without brackets) or a host name.
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String {
            host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }

        /// Whether `host` is a name (the guest is told it means 127.0.0.1)
        /// rather than an address.
        public var hostIsName: Bool {
            Egress.isIPAddress(host) == false
        }
    }

    /// Most endpoints one job may name.
    public static let maxEndpoints = 32

    public var description: String {
        switch self {
        case .none: return "none"
        case .open: return "open"
        case .allow(let endpoints): return "allow=" + endpoints.map(\.description).joined(separator: ",")
        }
    }

    /// The mode's name: `none`, `allow` or `open`.
    public var mode: String {
        switch self {
        case .none: return "none"
        case .allow: return "allow"
        case .open: return "open"
        }
    }

    /// The endpoints of an `allow`, else none.
    public var endpoints: [Endpoint] {
        if case .allow(let endpoints) = self { return endpoints }
        return []
    }

    /// Reads `none`, `open` or `allow=HOST:PORT,...`.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` naming the bad part.
    public static func parse(_ text: String) throws(AirlockError) -> Egress {
        switch text {
        case "none": return .none
        case "open": return .open
        default: break
        }
        guard text.hasPrefix("allow=") else {
            throw AirlockError(
                .invalidArgument, "'\(text)' is not an egress mode",
                hint: "use none, open, or allow=HOST:PORT,... (for example allow=127.0.0.1:8080)")
        }
        let list = text.dropFirst("allow=".count).split(separator: ",", omittingEmptySubsequences: false)
        let endpoints = try list.map { (item) throws(AirlockError) in try parseEndpoint(String(item)) }
        let egress = Egress.allow(endpoints)
        try egress.validate()
        return egress
    }

    /// Checks the endpoints of an `allow`: at least one, at most
    /// `maxEndpoints`, each port once (the guest reaches each at its port on
    /// 127.0.0.1), and never port 22, where the guest's SSH server listens.
    public func validate() throws(AirlockError) {
        guard case .allow(let endpoints) = self else { return }
        guard !endpoints.isEmpty else {
            throw AirlockError(
                .invalidArgument, "egress 'allow' names no endpoint", hint: "for example --egress allow=127.0.0.1:8080")
        }
        guard endpoints.count <= Self.maxEndpoints else {
            throw AirlockError(
                .invalidArgument, "egress 'allow' names \(endpoints.count) endpoints; at most \(Self.maxEndpoints)")
        }
        var ports: [Int: Endpoint] = [:]
        for endpoint in endpoints {
            guard (1...65535).contains(endpoint.port), endpoint.port != 22 else {
                throw AirlockError(
                    .invalidArgument,
                    "egress endpoint '\(endpoint)' has port \(endpoint.port), which the guest cannot be given",
                    hint: "ports run from 1 to 65535; 22 is the guest's own SSH server")
            }
            guard Self.isIPAddress(endpoint.host) || Self.isHostName(endpoint.host) else {
                throw AirlockError(
                    .invalidArgument, "'\(Terminal.escape(endpoint.host))' is not an IP address or a host name",
                    hint: "write endpoints as HOST:PORT, IPv6 addresses in brackets: [::1]:8080")
            }
            if let other = ports[endpoint.port] {
                throw AirlockError(
                    .invalidArgument,
                    "egress endpoints '\(other)' and '\(endpoint)' share port \(endpoint.port); the guest reaches "
                        + "each endpoint at its port on 127.0.0.1, so each port may be named once")
            }
            ports[endpoint.port] = endpoint
        }
    }

    /// This egress given after `earlier`: an allow list adds to an earlier
    /// one; anything else replaces it.
    ///
    /// - Throws: `AirlockError` when the combined list is not valid.
    public func adding(to earlier: Egress) throws(AirlockError) -> Egress {
        guard case .allow(let more) = self, case .allow(let first) = earlier else { return self }
        let combined = Egress.allow(first + more.filter { !first.contains($0) })
        try combined.validate()
        return combined
    }

    static func parseEndpoint(_ item: String) throws(AirlockError) -> Endpoint {
        let host: Substring
        let port: Substring
        if item.hasPrefix("["), let close = item.firstIndex(of: "]") {
            host = item[item.index(after: item.startIndex)..<close]
            let rest = item[item.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw endpointError(item)
            }
            port = rest.dropFirst()
        } else if let colon = item.lastIndex(of: ":"), !item[..<colon].contains(":") {
            host = item[..<colon]
            port = item[item.index(after: colon)...]
        } else {
            throw endpointError(item)
        }
        guard !host.isEmpty, let number = Int(port), port.allSatisfy(\.isASCII) else {
            throw endpointError(item)
        }
        return Endpoint(host: String(host), port: number)
    }

    private static func endpointError(_ item: String) -> AirlockError {
        AirlockError(
            .invalidArgument, "egress endpoint '\(Terminal.escape(item))' is not HOST:PORT",
            hint: "for example allow=127.0.0.1:8080,api.example.com:443 ([::1]:8080 for IPv6)")
    }

    /// Whether `text` is a numeric IPv4 or IPv6 address.
    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// Whether `text` is a DNS host name: dot-separated labels of letters,
    /// digits and hyphens, none starting or ending with a hyphen.
    static func isHostName(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 253 else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.unicodeScalars.allSatisfy {
                    $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-")
                }
        }
    }
}

extension Egress: Codable {
    private enum CodingKeys: String, CodingKey {
        case mode, endpoints
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        switch try values.decode(String.self, forKey: .mode) {
        case "allow": self = .allow(try values.decode([Endpoint].self, forKey: .endpoints))
        case "open": self = .open
        default: self = .none
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(mode, forKey: .mode)
        if case .allow(let endpoints) = self {
            try values.encode(endpoints, forKey: .endpoints)
        }
    }
}

/// What a job's egress carried, for `result.json`.
public struct EgressReport: Sendable, Codable, Equatable {
    /// `none`, `allow` or `open`.
    public var mode: String
    /// The endpoints allowed, as `HOST:PORT`.
    public var endpoints: [String]?
    /// Connections the guest made to allowed endpoints and Airlock relayed.
    public var connections = 0
    /// Guest connections that were dropped: the endpoint refused or could
    /// not be reached, or too many were open at once.
    public var failed = 0
    /// Bytes carried from the guest to the endpoints, and back.
    public var bytesOut: Int64 = 0
    public var bytesIn: Int64 = 0
    /// Why the first few failed connections failed, `HOST:PORT: reason`.
    public var failures: [String]?

    /// Most failures listed.
    static let maxListedFailures = 10

    mutating func noteFailure(_ endpoint: Egress.Endpoint, _ reason: String) {
        failed += 1
        if (failures?.count ?? 0) < Self.maxListedFailures {
            failures = (failures ?? []) + ["\(endpoint): \(reason)"]
        }
    }

    public init(_ egress: Egress) {
        mode = egress.mode
        endpoints = egress.endpoints.isEmpty ? nil : egress.endpoints.map(\.description)
    }
}
