import Foundation
import SQLite

// MARK: - The hosts jobs run on

extension JobStore {
    /// A libvirt host that controllers place jobs on.
    public struct Host: Sendable, Equatable {
        /// A short name jobs can ask for (`--host NAME`).
        public var name: String
        /// libvirt's URI: `qemu:///system`, or `qemu+ssh://user@host/system`.
        public var uri: String
        /// What guests may use there, when set; else what libvirt reports.
        public var vcpus: Int?
        public var memoryMiB: Int?
        /// Jobs may ask for a host by label (`--host-label key=value`).
        public var labels: [String: String]
        /// A draining host takes no new jobs; its running jobs finish.
        public var draining = false

        public init(
            name: String, uri: String, vcpus: Int? = nil, memoryMiB: Int? = nil, labels: [String: String] = [:]
        ) {
            self.name = name
            self.uri = uri
            self.vcpus = vcpus
            self.memoryMiB = memoryMiB
            self.labels = labels
        }

        /// Whether a job that asks for `host` and `label` may run here.
        public func accepts(host wanted: String?, label: String?) -> Bool {
            if let wanted, wanted != name { return false }
            if let label {
                let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, labels[String(parts[0])] == String(parts[1]) else { return false }
            }
            return true
        }

        /// Checks the name and the URI.
        ///
        /// - Throws: `AirlockError` `.invalidArgument` naming what is wrong.
        public func validate() throws(AirlockError) {
            guard Self.isValidName(name) else {
                throw AirlockError(
                    .invalidArgument, "'\(name)' is not a host name Airlock accepts",
                    hint: "use letters, digits, '-' and '_', at most 63, starting with a letter or digit")
            }
            _ = try RemoteHost.parse(uri)
            if let vcpus, vcpus < 1 {
                throw AirlockError(.invalidArgument, "host '\(name)' must give guests at least one vCPU")
            }
            if let memoryMiB, memoryMiB < 64 {
                throw AirlockError(.invalidArgument, "host '\(name)' must give guests at least 64 MiB of memory")
            }
            for (key, value) in labels where key.isEmpty || key.contains("=") || value.contains("\u{0}") {
                throw AirlockError(.invalidArgument, "the label '\(key)=\(value)' of host '\(name)' is not valid")
            }
        }

        static func isValidName(_ name: String) -> Bool {
            guard let first = name.unicodeScalars.first, name.utf8.count <= 63,
                first.isASCII, first.properties.isAlphabetic || ("0"..."9").contains(first)
            else { return false }
            return name.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_")
            }
        }
    }

    /// Adds a host, or with `replace` replaces the one of that name.
    ///
    /// - Throws: `AirlockError` `.exists` when the name or URI is taken.
    public func addHost(_ host: Host, replace: Bool = false) throws(AirlockError) {
        try host.validate()
        let labels = (try? JSONEncoder().encode(host.labels)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        do {
            try access("add host '\(host.name)'") { database in
                try database.transaction {
                    if replace {
                        try database.prepare("DELETE FROM hosts WHERE name = ?").run([.text(host.name)])
                    }
                    try database.prepare(
                        """
                        INSERT INTO hosts (name, uri, vcpus, memory_mib, labels, draining, added)
                        VALUES (?, ?, ?, ?, ?, 0, ?)
                        """
                    ).run([
                        .text(host.name), .text(host.uri), host.vcpus.map { .integer(Int64($0)) } ?? .null,
                        host.memoryMiB.map { .integer(Int64($0)) } ?? .null, .text(labels), .real(Self.now),
                    ])
                }
            }
        } catch let error where (error.cause as? SQLiteError)?.isConstraint == true {
            throw AirlockError(
                .exists, "a host named '\(host.name)' or with the URI '\(host.uri)' is already added",
                hint: "'airlock host ls' lists the hosts; remove one with 'airlock host rm NAME'")
        }
    }

    /// Every added host, by name.
    public func hosts() throws(AirlockError) -> [Host] {
        try access("list hosts") { database in
            try database.prepare("SELECT name, uri, vcpus, memory_mib, labels, draining FROM hosts ORDER BY name")
                .rows().map { row in
                    var host = Host(
                        name: row[0].text ?? "", uri: row[1].text ?? "", vcpus: row[2].integer.map { Int($0) },
                        memoryMiB: row[3].integer.map { Int($0) },
                        labels: (try? JSONDecoder().decode(
                            [String: String].self, from: Data((row[4].text ?? "{}").utf8)))
                            ?? [:])
                    host.draining = (row[5].integer ?? 0) != 0
                    return host
                }
        }
    }

    /// Removes a host. Jobs running there go on; queued jobs that ask for it
    /// by name fail at the next controller tick.
    ///
    /// - Throws: `AirlockError` `.notFound` when there is no such host.
    public func removeHost(_ name: String) throws(AirlockError) {
        try access("remove host '\(name)'") { database in
            try database.prepare("DELETE FROM hosts WHERE name = ?").run([.text(name)])
            guard database.changes == 1 else {
                throw AirlockError(.notFound, "no host '\(name)'", hint: "'airlock host ls' lists the hosts")
            }
        }
    }

    /// Stops (or, with `false`, resumes) placing new jobs on a host.
    ///
    /// - Throws: `AirlockError` `.notFound` when there is no such host.
    public func setDraining(_ name: String, _ draining: Bool) throws(AirlockError) {
        try access("drain host '\(name)'") { database in
            try database.prepare("UPDATE hosts SET draining = ? WHERE name = ?").run([
                .integer(draining ? 1 : 0), .text(name),
            ])
            guard database.changes == 1 else {
                throw AirlockError(.notFound, "no host '\(name)'", hint: "'airlock host ls' lists the hosts")
            }
        }
    }

    /// The live jobs on each host, by URI: how many, and their vCPUs and memory.
    public func liveUsage() throws(AirlockError) -> [String: (jobs: Int, vcpus: Int, memoryMiB: Int)] {
        try access("count live jobs") { database in
            var usage: [String: (jobs: Int, vcpus: Int, memoryMiB: Int)] = [:]
            for row in try database.prepare(
                "SELECT host, count(*), sum(vcpus), sum(memory_mib) FROM jobs WHERE state IN \(State.liveSQL) GROUP BY host"
            ).rows() {
                guard let host = row[0].text else { continue }
                usage[host] = (Int(row[1].integer ?? 0), Int(row[2].integer ?? 0), Int(row[3].integer ?? 0))
            }
            return usage
        }
    }

    /// Queued jobs that ask for a host by name that no host has, or for a
    /// label that no host carries: they could never run.
    public func queuedForNoHost(_ hosts: [Host]) throws(AirlockError) -> [(id: String, want: String)] {
        let rows = try access("list jobs that ask for a host") { database in
            try database.prepare(
                "SELECT id, want_host, want_label FROM jobs WHERE state = 'queued' AND (want_host IS NOT NULL OR want_label IS NOT NULL)"
            ).rows()
        }
        return rows.compactMap { row in
            let wantHost = row[1].text
            let wantLabel = row[2].text
            guard !hosts.contains(where: { $0.accepts(host: wantHost, label: wantLabel) }) else { return nil }
            let want = wantHost.map { "host '\($0)'" } ?? wantLabel.map { "a host labelled '\($0)'" } ?? ""
            return (row[0].text ?? "", want)
        }
    }
}
