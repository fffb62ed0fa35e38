import Foundation
import Testing

@testable import Airlock

@Suite("Hosts")
struct HostTests {
    @Test("local URIs name no remote host; qemu+ssh ones give user, port, key and known hosts")
    func remoteHosts() throws {
        #expect(try RemoteHost.parse("qemu:///system") == nil)
        #expect(try RemoteHost.parse("test:///default") == nil)
        let remote = try #require(
            try RemoteHost.parse(
                "qemu+ssh://airlock@203.0.113.7:2222/system?keyfile=/k/id&known_hosts=/k/known&no_tty=1",
                home: "/nonexistent"))
        #expect(
            remote
                == RemoteHost(
                    user: "airlock", address: "203.0.113.7", port: 2222, keyFile: "/k/id", knownHostsFile: "/k/known"))

        // Without keyfile=, the first default key found in the home folder; known hosts from there too.
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("home-\(UUID())")
        defer { try? FileManager.default.removeItem(at: home) }
        try FileManager.default.createDirectory(
            at: home.appendingPathComponent(".ssh"), withIntermediateDirectories: true)
        try Data("key".utf8).write(to: home.appendingPathComponent(".ssh/id_rsa"))
        let plain = try #require(try RemoteHost.parse("qemu+ssh://kvm-1/system", home: home.path))
        #expect(plain.keyFile == home.appendingPathComponent(".ssh/id_rsa").path)
        #expect(plain.knownHostsFile == home.appendingPathComponent(".ssh/known_hosts").path)
        #expect(plain.port == 22)
    }

    @Test("a remote host reached other than by SSH is refused, saying how to reach it")
    func nonSSHRemote() {
        #expect {
            try RemoteHost.parse("qemu+tcp://kvm-1/system")
        } throws: { error in
            "\(error)".contains("through SSH") && (error as? AirlockError)?.hint?.contains("qemu+ssh://") == true
        }
    }

    @Test("hosts are added, listed, drained and removed; names and URIs are unique")
    func registry() throws {
        let store = try JobStore(file: ":memory:")
        try store.addHost(JobStore.Host(name: "a", uri: "qemu:///system"))
        try store.addHost(
            JobStore.Host(
                name: "b", uri: "qemu+ssh://root@10.0.0.2/system", vcpus: 8, memoryMiB: 16384,
                labels: ["zone": "z1"]))
        #expect(throws: AirlockError.self) { try store.addHost(JobStore.Host(name: "a", uri: "qemu:///session")) }
        #expect(throws: AirlockError.self) { try store.addHost(JobStore.Host(name: "c", uri: "qemu:///system")) }
        #expect(throws: AirlockError.self) { try store.addHost(JobStore.Host(name: "bad name", uri: "qemu:///system")) }
        try store.setDraining("b", true)
        let hosts = try store.hosts()
        #expect(hosts.map(\.name) == ["a", "b"])
        #expect(hosts[1].draining && hosts[1].labels == ["zone": "z1"] && hosts[1].vcpus == 8)
        try store.removeHost("a")
        #expect(try store.hosts().map(\.name) == ["b"])
        #expect(throws: AirlockError.self) { try store.removeHost("a") }
    }

    @Test("a job asking for a host by name or label is claimed only there; one asking for none, anywhere")
    func placement() throws {
        let store = try JobStore(file: ":memory:")
        var pinned = JobStore.NewJob(id: "000000000001", spec: "{}", results: "/r/1")
        pinned.host = "b"
        var labelled = JobStore.NewJob(id: "000000000002", spec: "{}", results: "/r/2")
        labelled.hostLabel = "zone=z1"
        let free = JobStore.NewJob(id: "000000000003", spec: "{}", results: "/r/3")
        try store.submit([pinned, labelled, free])
        let capacity = HostCapacity(concurrency: 5, vcpus: 8, memoryMiB: 8192)

        func claim(on name: String, labels: [String: String] = [:]) throws -> String? {
            if case .claimed(let claim) = try store.claimNext(
                owner: "o", host: "uri-\(name)", capacity: capacity, named: (name, labels))
            {
                return claim.id
            }
            return nil
        }
        #expect(try claim(on: "a") == "000000000003")
        #expect(try claim(on: "a") == nil)
        #expect(try claim(on: "c", labels: ["zone": "z1"]) == "000000000002")
        #expect(try claim(on: "b") == "000000000001")

        var lost = JobStore.NewJob(id: "000000000004", spec: "{}", results: "/r/4")
        lost.host = "gone"
        try store.submit([lost])
        let unplaceable = try store.queuedForNoHost([JobStore.Host(name: "a", uri: "qemu:///system")])
        #expect(unplaceable.map(\.id) == ["000000000004"])
        #expect(unplaceable.first?.want == "host 'gone'")
    }

    @Test("the hosts file Terraform writes is read; a bad entry is named")
    func hostsFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("hosts-\(UUID()).json")
        defer { try? FileManager.default.removeItem(at: file) }
        // As terraform's jsonencode writes it: keys sorted, & escaped.
        try Data(
            #"""
            {"hosts":[{"labels":{"cloud":"gcp","zone":"europe-west4-a"},"memory":"28G","name":"airlock-kvm-1","uri":"qemu+ssh://airlock@203.0.113.10/system?keyfile=/home/me/.ssh/airlock\u0026no_tty=1","vcpus":8}]}
            """#.utf8
        ).write(to: file)
        let hosts = try HostsFile.load(file)
        #expect(hosts.count == 1)
        #expect(hosts[0].name == "airlock-kvm-1")
        #expect(hosts[0].uri == "qemu+ssh://airlock@203.0.113.10/system?keyfile=/home/me/.ssh/airlock&no_tty=1")
        #expect(hosts[0].vcpus == 8 && hosts[0].memoryMiB == 28 * 1024)
        #expect(hosts[0].labels == ["cloud": "gcp", "zone": "europe-west4-a"])

        try Data(#"{"hosts":[{"name":"x","uri":"qemu+ssh://h/system","memory":"lots"}]}"#.utf8).write(to: file)
        #expect {
            try HostsFile.load(file)
        } throws: { error in
            "\(error)".contains("host 1 has memory 'lots'")
        }
        try Data(#"{"machines":[]}"#.utf8).write(to: file)
        #expect(throws: AirlockError.self) { try HostsFile.load(file) }
    }
}
