import Foundation
import Libvirt
import Synchronization
import Testing

/// Images with disks, end to end: the Debian image (direct kernel boot, root
/// on a virtio disk), a cloud-init image built from Debian packages and
/// imported, overlays, `--disk`, and the inputs that must fail cleanly.
extension Integration {
    @Suite("images, overlays and cloud images with real guests", .serialized)
    struct ImageTests {
        init() throws {
            try Harness.requireLibvirt()
            try Images.requireDebian()
        }

        // MARK: - Debian

        @Test("a Python agent runs on the Debian image and its JSON results come back; the base disk is unchanged")
        func pythonAgent() throws {
            let base = try Images.basePath("debian")
            let before = try Images.hash(base)
            let outcome = try Harness.run([
                "--image", "debian", "--workload", "examples/python-agent", "--", "python3", "agent.py",
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.contains("[3/3] read review.txt"))
            let answer = try #require(
                try JSONSerialization.jsonObject(with: outcome.file("out/result.json")) as? [String: Any])
            #expect((answer["python"] as? String)?.hasPrefix("3.11") == true)
            let top = try #require(answer["topWords"] as? [[String: Any]])
            #expect(top.first?["word"] as? String == "the")
            #expect(top.first?["count"] as? Int == 5)
            try Harness.expectNothingLeft()
            #expect(try Images.hash(base) == before, "the base disk changed")
        }

        @Test("the overlay is removed after a failure and after a timeout, and the base is never written")
        func overlayRemoved() throws {
            let base = try Images.basePath("debian")
            let before = try Images.hash(base)
            let failed = try Harness.run([
                "--image", "debian", "--workload", "examples/hello", "--", "sh", "-c",
                "echo scribble >/etc/scribble; exit 3",
            ])
            #expect(failed.status == 3, "\(failed.stderrText)")
            try Harness.expectNothingLeft()
            let timedOut = try Harness.run([
                "--image", "debian", "--workload", "examples/hello", "--timeout", "3s", "--", "sh", "-c",
                "dd if=/dev/zero of=/var/tmp/fill bs=1M count=50 2>/dev/null; sleep 600",
            ])
            #expect(timedOut.status == 124, "\(timedOut.stderrText)")
            #expect(try timedOut.result()["state"] as? String == "timed_out")
            try Harness.expectNothingLeft()
            #expect(try Images.hash(base) == before, "the base disk changed")
        }

        @Test("two jobs at once on one base disk each see only their own writes")
        func twoJobsOneBase() throws {
            let outcomes = Mutex<[Int: Harness.Outcome]>([:])
            let script = "echo $MARK >/root/mark; sleep 4; cat /root/mark; ls /root"
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                let outcome = try? Harness.run([
                    "--image", "debian", "--workload", "examples/hello", "--env", "MARK=job\(index)", "--", "sh",
                    "-c", script,
                ])
                outcomes.withLock { $0[index] = outcome }
            }
            for index in 0..<2 {
                let outcome = try #require(outcomes.withLock { $0[index] })
                #expect(outcome.status == 0, "\(outcome.stderrText)")
                #expect(outcome.stdoutText == "job\(index)\nmark\n")
            }
            try Harness.expectNothingLeft()
        }

        @Test("--disk gives the guest a bigger root file system; without it the image's size stays")
        func diskGrowth() throws {
            let script = "df -B1 --output=size / | tail -n 1"
            let grown = try Harness.run([
                "--image", "debian", "--workload", "examples/hello", "--disk", "5G", "--", "sh", "-c", script,
            ])
            #expect(grown.status == 0, "\(grown.stderrText)")
            let size = try #require(Int64(grown.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(size > 4_500_000_000 && size <= 5 << 30, "root file system is \(size) bytes")
            let plain = try Harness.run(["--image", "debian", "--workload", "examples/hello", "--", "sh", "-c", script])
            let plainSize = try #require(Int64(plain.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(plainSize < 3 << 30, "root file system is \(plainSize) bytes")
            try Harness.expectNothingLeft()
        }

        @Test("after SIGKILL of airlock mid-job, gc removes the guest, its disk overlay and its folder")
        func overlayAfterKill() throws {
            let results = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-kill-\(UUID())")
            let outcome = try Harness.run(
                ["--image", "debian", "--workload", "examples/hello", "--", "sleep", "600"], results: results
            ) { process in
                // Until the command runs: its output file exists once SSH is up.
                let deadline = Date().addingTimeInterval(120)
                while Date() < deadline
                    && !FileManager.default.fileExists(atPath: results.appendingPathComponent("stdout").path)
                {
                    Thread.sleep(forTimeInterval: 0.2)
                }
                Thread.sleep(forTimeInterval: 1)
                kill(process.processIdentifier, SIGKILL)
            }
            #expect(outcome.status == 9 || outcome.status == 137)
            let overlays = Images.poolFiles().filter { $0.hasPrefix("airlock-") }
            #expect(overlays.count == 1, "the killed job's overlay should be there before gc: \(overlays)")
            let gc = try Harness.invoke(["gc"], results: results)
            #expect(gc.status == 0)
            for overlay in overlays {
                #expect(gc.stdoutText.contains("removed disk overlay"), "\(gc.stdoutText)")
                #expect(gc.stdoutText.contains(overlay), "\(gc.stdoutText)")
            }
            try Harness.expectNothingLeft()
        }

        @Test("a guest paused because the host's disk is full fails the job at once, and its overlay goes (BC-12)")
        func hostDiskFull() throws {
            // A catalog holding the debian image on a file system with about 50 MiB to spare.
            let mount = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-full-\(UUID())")
            try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
            try Images.command("/bin/mount", ["-t", "tmpfs", "-o", "size=300m,mode=0755", "tmpfs", mount.path])
            let catalog = mount.appendingPathComponent("images")
            defer {
                Images.stopPools(under: mount)
                try? Images.command("/bin/umount", [mount.path])
                try? FileManager.default.removeItem(at: mount)
            }
            let copy = try Images.copyDebian(to: catalog)

            let outcome = try Harness.run(
                [
                    "--image", "debian", "--workload", "examples/hello", "--timeout", "10m", "--", "sh", "-c",
                    "dd if=/dev/urandom of=/var/tmp/fill bs=1M count=1000 conv=fsync 2>&1; echo written",
                ], environment: ["AIRLOCK_IMAGES": catalog.path])
            #expect(outcome.status == 125, "\(outcome.stderrText)")
            #expect(outcome.stderrText.contains("host storage full"), "\(outcome.stderrText)")
            #expect(!outcome.stdoutText.contains("written"))
            #expect(outcome.elapsed < .seconds(150), "took \(outcome.elapsed)")
            let left =
                ((try? FileManager.default.contentsOfDirectory(atPath: copy.deletingLastPathComponent().path))
                ?? []).filter { $0.hasPrefix("airlock-") }
            #expect(left.isEmpty, "overlays left: \(left)")
            try Harness.expectNothingLeft()
        }

        @Test("three jobs at once on a catalog whose pool does not exist yet make one pool and run (BC-36)")
        func firstJobsRace() throws {
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-race-\(UUID())")
            let catalog = folder.appendingPathComponent("images")
            defer {
                Images.stopPools(under: folder)
                try? FileManager.default.removeItem(at: folder)
            }
            _ = try Images.copyDebian(to: catalog)
            chmod(folder.path, 0o711)
            let outcomes = Mutex<[Int: Harness.Outcome]>([:])
            DispatchQueue.concurrentPerform(iterations: 3) { index in
                let outcome = try? Harness.run(
                    ["--image", "debian", "--workload", "examples/hello", "--", "true"],
                    environment: ["AIRLOCK_IMAGES": catalog.path])
                outcomes.withLock { $0[index] = outcome }
            }
            for index in 0..<3 {
                let outcome = try #require(outcomes.withLock { $0[index] })
                #expect(outcome.status == 0, "\(outcome.stderrText)")
            }
            let connection = try Connection(uri: "qemu:///system")
            defer { connection.close() }
            let pools = try connection.allStoragePools().filter {
                (try? $0.targetPath())?.hasPrefix(folder.resolvingSymlinksInPath().path) == true
            }
            #expect(pools.count == 1, "pools for the catalog: \(pools.map(\.name))")
            let left =
                ((try? FileManager.default.contentsOfDirectory(atPath: catalog.appendingPathComponent(".pool").path))
                ?? []).filter { $0.hasPrefix("airlock-") }
            #expect(left.isEmpty, "overlays left: \(left)")
            try Harness.expectNothingLeft()
        }

        @Test("gc removes an old overlay no job folder names, and stops a pool whose folder is gone")
        func gcSweepsPool() throws {
            // An overlay whose job folder went away by hand, made two minutes ago.
            let orphan = Images.catalog.appendingPathComponent(".pool/airlock-0123456789ff.qcow2")
            try Images.qemuImg([
                "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", try Images.basePath("debian").path, orphan.path,
            ])
            var times = [timeval(tv_sec: time(nil) - 120, tv_usec: 0), timeval(tv_sec: time(nil) - 120, tv_usec: 0)]
            utimes(orphan.path, &times)
            // A young one is left alone: its job may be starting.
            let young = Images.catalog.appendingPathComponent(".pool/airlock-0123456789fe.qcow2")
            try Data().write(to: young)
            defer { unlink(young.path) }

            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-pool-\(UUID())")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let connection = try Connection(uri: "qemu:///system")
            defer { connection.close() }
            let name = "airlock-test\(UInt32.random(in: 0...UInt32.max))"
            _ = try connection.createStoragePool(
                xml: "<pool type='dir'><name>\(name)</name><target><path>\(folder.path)</path></target></pool>")
            try FileManager.default.removeItem(at: folder)

            let gc = try Harness.invoke(["gc"], results: FileManager.default.temporaryDirectory)
            #expect(gc.status == 0, "\(gc.stderrText)")
            #expect(gc.stdoutText.contains("removed disk overlay \(orphan.path)"), "\(gc.stdoutText)")
            #expect(!FileManager.default.fileExists(atPath: orphan.path))
            #expect(FileManager.default.fileExists(atPath: young.path))
            #expect(try connection.storagePool(named: name) == nil, "the stale pool is still there")
            #expect(gc.stdoutText.contains("stopped storage pool \(name)"), "\(gc.stdoutText)")
        }

        // MARK: - Cloud images

        @Test("a cloud-init image built from Debian packages imports, boots from its disk, takes the job's keys, grows")
        func cloudImage() throws {
            let name = try Images.importCloud()
            let base = try Images.basePath(name)
            let before = try Images.hash(base)
            let outcome = try Harness.run(
                [
                    "--image", name, "--memory", "1G", "--disk", "4G", "--workload", "examples/python-agent", "--",
                    "sh", "-c",
                    "hostname; id -u; df -B1 --output=size / | tail -n 1; python3 agent.py >/dev/null && head -c 1 out/result.json",
                ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            let result = try outcome.result()
            let jobID = try #require(result["jobID"] as? String)
            let lines = outcome.stdoutText.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.count == 4, "\(outcome.stdoutText)")
            #expect(lines.first == "airlock-\(jobID)" && lines.dropFirst().first == "0", "\(outcome.stdoutText)")
            // cloud-init's growpart and resizefs filled the bigger disk.
            let size = Int64(lines.count > 2 ? lines[2] : "") ?? 0
            #expect(size > 3_500_000_000, "root file system is \(size) bytes")
            #expect(lines.last == "{", "\(outcome.stdoutText)")
            try Harness.expectNothingLeft()
            #expect(try Images.hash(base) == before, "the base disk changed")
        }

        @Test(
            "a disk without a boot loader as a cloud image fails within its deadline, saying cloud-init did not finish")
        func cloudInitNeverFinishes() throws {
            // The Debian image's root file system has no boot loader: the firmware never starts anything.
            let disk = try Images.basePath("debian")
            let imported = try Images.image(["import", "noboot", disk.path, "--force"])
            #expect(imported.status == 0, "\(imported.stderrText)")
            let outcome = try Harness.run([
                "--image", "noboot", "--workload", "examples/hello", "--boot-timeout", "15s", "--tcg-timeout-factor",
                "1", "--", "true",
            ])
            #expect(outcome.status == 125)
            #expect(outcome.stderrText.contains("did not become ready within 15 s"), "\(outcome.stderrText)")
            #expect(outcome.stderrText.contains("cloud-init did not finish"), "\(outcome.stderrText)")
            #expect(outcome.elapsed < .seconds(40))
            try Harness.expectNothingLeft()
            #expect(try Images.image(["rm", "noboot"]).status == 0)
        }

        // MARK: - Bad input

        @Test("corrupt, truncated, layered and misnamed disks are refused at import, leaving nothing in the pool")
        func badImports() throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-bad-\(UUID())")
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: scratch) }
            let poolBefore = Images.poolFiles()

            // Random bytes: qemu-img calls them raw, but nothing could boot them.
            let random = scratch.appendingPathComponent("random.img")
            try Data((0..<(1 << 20)).map { _ in UInt8.random(in: 0...255) }).write(to: random)
            let noise = try Images.image(["import", "bad", random.path])
            #expect(noise.status == 66, "\(noise.stderrText)")
            #expect(noise.stderrText.contains("not a bootable disk"), "\(noise.stderrText)")

            // The first megabyte of a real qcow2: a good header over missing tables.
            let truncated = scratch.appendingPathComponent("truncated.qcow2")
            let whole = try FileHandle(forReadingFrom: try Images.basePath("debian"))
            try whole.read(upToCount: 1 << 20)?.write(to: truncated)
            try whole.close()
            let cut = try Images.image(["import", "bad", truncated.path])
            #expect(cut.status == 66, "\(cut.stderrText)")

            // An overlay would read any host file it names as its backing file.
            let layered = scratch.appendingPathComponent("layered.qcow2")
            try Images.qemuImg(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", layered.path])
            let overlay = try Images.image(["import", "bad", layered.path])
            #expect(overlay.status == 66, "\(overlay.stderrText)")
            #expect(overlay.stderrText.contains("is an overlay on '/etc/hostname'"), "\(overlay.stderrText)")

            // So would an external data file.
            let external = scratch.appendingPathComponent("external.qcow2")
            try Images.qemuImg([
                "create", "-q", "-f", "qcow2", "-o", "data_file=\(scratch.path)/data.raw", external.path, "64M",
            ])
            let data = try Images.image(["import", "bad", external.path])
            #expect(data.status == 66, "\(data.stderrText)")
            #expect(data.stderrText.contains("keeps its data in the external file"), "\(data.stderrText)")

            for name in ["../escape", "a/b", ".pool", ".."] {
                let escaped = try Images.image(["import", name, random.path])
                #expect(escaped.status == 64, "\(name): \(escaped.stderrText)")
                #expect(escaped.stderrText.contains("not a valid image name"), "\(name): \(escaped.stderrText)")
            }
            let missing = try Images.image(["import", "bad", scratch.appendingPathComponent("nope.qcow2").path])
            #expect(missing.status == 64)

            #expect(Images.poolFiles() == poolBefore)
            #expect(!FileManager.default.fileExists(atPath: Images.catalog.appendingPathComponent("bad").path))
        }

        @Test("a manifest whose base disk is gone, and a job with too little memory, fail before any guest starts")
        func badJobs() throws {
            let folder = Images.catalog.appendingPathComponent("nodisk")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            var manifest = try String(
                contentsOf: Images.catalog.appendingPathComponent("debian/manifest.json"), encoding: .utf8)
            manifest = manifest.replacingOccurrences(of: "\"name\" : \"debian\"", with: "\"name\" : \"nodisk\"")
            let disk = try #require(try Images.manifest("debian")["disk"] as? String)
            manifest = manifest.replacingOccurrences(of: disk, with: "gone.qcow2")
            try manifest.write(to: folder.appendingPathComponent("manifest.json"), atomically: true, encoding: .utf8)
            for file in ["vmlinuz", "initrd.img"] {
                try FileManager.default.copyItem(
                    at: Images.catalog.appendingPathComponent("debian/\(file)"), to: folder.appendingPathComponent(file)
                )
            }
            let broken = try Harness.run(["--image", "nodisk", "--workload", "examples/hello", "--", "true"])
            #expect(broken.status == 66, "\(broken.stderrText)")
            #expect(broken.stderrText.contains("missing its file 'gone.qcow2'"), "\(broken.stderrText)")

            let small = try Harness.run([
                "--image", "debian", "--memory", "128M", "--workload", "examples/hello", "--", "true",
            ])
            #expect(small.status == 64)
            #expect(small.stderrText.contains("needs at least 512 MiB"), "\(small.stderrText)")
            let shrink = try Harness.run([
                "--image", "debian", "--disk", "1G", "--workload", "examples/hello", "--", "true",
            ])
            #expect(shrink.status == 64)
            #expect(shrink.stderrText.contains("cannot shrink"), "\(shrink.stderrText)")
            let tiny = try Harness.run(["--disk", "4G", "--workload", "examples/hello", "--", "true"])
            #expect(tiny.status == 64)
            #expect(tiny.stderrText.contains("has no disk"), "\(tiny.stderrText)")
            try Harness.expectNothingLeft()
        }

        @Test("a rebuild with an unchanged recipe is skipped; inspect shows the manifest")
        func buildSkipsAndInspects() throws {
            let again = try Images.image(["build", "debian"])
            #expect(again.status == 0, "\(again.stderrText)")
            #expect(again.stdoutText.contains("image debian is up to date"))
            #expect(again.elapsed < .seconds(10))
            let inspect = try Images.image(["inspect", "debian"])
            let object = try #require(try JSONSerialization.jsonObject(with: inspect.stdout) as? [String: Any])
            for key in ["boot", "kernel", "initrd", "disk", "cmdline", "sshUser", "keyInjection", "minimumMemoryMiB"] {
                #expect(object[key] != nil, "inspect lacks \(key)")
            }
            #expect((object["contentHash"] as? String)?.hasPrefix("sha256:") == true)
            #expect((object["recipeHash"] as? String)?.hasPrefix("sha256:") == true)
            #expect(object["built"] is String)
            let list = try Images.image(["ls"])
            let row = list.stdoutText.split(separator: "\n").first { $0.hasPrefix("debian ") }
            #expect(row?.split(separator: " ").prefix(4) == ["debian", "kernel", "fwcfg", "2"], "\(list.stdoutText)")
        }
    }
}

/// The images the tests use, in the harness's state folder.
enum Images {
    static var catalog: URL { Harness.stateFolder.appendingPathComponent("images") }

    /// Builds the Debian image unless it is up to date (a few minutes the first time).
    static func requireDebian() throws {
        let outcome = try image(["build", "debian"])
        guard outcome.status == 0 else {
            Issue.record("cannot build the debian image: \(outcome.stderrText)")
            throw CocoaError(.fileNoSuchFile)
        }
    }

    /// Runs `airlock image ARGS`.
    static func image(_ arguments: [String]) throws -> Harness.Outcome {
        try Harness.invoke(["image"] + arguments, results: FileManager.default.temporaryDirectory)
    }

    static func manifest(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: catalog.appendingPathComponent("\(name)/manifest.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func basePath(_ name: String) throws -> URL {
        let disk = try #require(try manifest(name)["disk"] as? String)
        return catalog.appendingPathComponent(".pool/\(disk)")
    }

    static func poolFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: catalog.appendingPathComponent(".pool").path)) ?? [])
            .sorted()
    }

    static func hash(_ file: URL) throws -> String {
        SHA256.hex(try Data(contentsOf: file, options: .alwaysMapped))
    }

    /// A catalog at `catalog` holding a copy of the debian image; returns its base disk.
    static func copyDebian(to catalog: URL) throws -> URL {
        let base = try basePath("debian")
        try FileManager.default.createDirectory(
            at: catalog.appendingPathComponent(".pool"), withIntermediateDirectories: true)
        chmod(catalog.path, 0o755)
        chmod(catalog.appendingPathComponent(".pool").path, 0o711)
        try FileManager.default.copyItem(
            at: self.catalog.appendingPathComponent("debian"), to: catalog.appendingPathComponent("debian"))
        let copy = catalog.appendingPathComponent(".pool/\(base.lastPathComponent)")
        try command("/bin/cp", ["--preserve=mode,ownership", base.path, copy.path])
        return copy
    }

    static func command(_ path: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            Issue.record("\(path) \(arguments) failed with status \(process.terminationStatus)")
            throw CocoaError(.fileWriteUnknown)
        }
    }

    /// Stops the storage pools whose folder lies under `folder`.
    static func stopPools(under folder: URL) {
        guard let connection = try? Connection(uri: "qemu:///system") else { return }
        defer { connection.close() }
        for pool in (try? connection.allStoragePools()) ?? [] {
            if let path = try? pool.targetPath(), path.hasPrefix(folder.resolvingSymlinksInPath().path) {
                try? pool.destroy()
            }
        }
    }

    static func qemuImg(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-img")
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "qemu-img \(arguments) failed")
    }

    /// Builds the stand-in cloud image from images/cloudinit (kept in the
    /// state folder's test cache, keyed by the recipe's hash, so that it is
    /// built once per recipe) and imports it as `cloudtest`.
    static func importCloud() throws -> String {
        let recipe = Harness.repository.appendingPathComponent("images/cloudinit/build.sh")
        let hash = SHA256.hex(try Data(contentsOf: recipe)).prefix(16)
        let cache = Harness.stateFolder.appendingPathComponent("test-cache")
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let disk = cache.appendingPathComponent("cloudinit-\(hash).qcow2")
        if !FileManager.default.fileExists(atPath: disk.path) {
            for old in (try? FileManager.default.contentsOfDirectory(atPath: cache.path)) ?? []
            where old.hasPrefix("cloudinit-") {
                try? FileManager.default.removeItem(at: cache.appendingPathComponent(old))
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [recipe.path, disk.path]
            process.standardOutput = FileHandle.standardError
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                Issue.record("images/cloudinit/build.sh failed with status \(process.terminationStatus)")
                throw CocoaError(.fileWriteUnknown)
            }
        }
        let outcome = try image(["import", "cloudtest", disk.path, "--force", "--min-memory", "1G"])
        guard outcome.status == 0 else {
            Issue.record("cannot import the cloud image: \(outcome.stderrText)")
            throw CocoaError(.fileReadCorruptFile)
        }
        return "cloudtest"
    }
}
