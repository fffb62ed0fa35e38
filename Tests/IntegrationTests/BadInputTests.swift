import Foundation
import Testing

/// Bad input gets one clear error, a documented exit code, and leaves nothing behind.
extension Integration {
    @Suite("airlock run with bad input", .serialized)
    struct BadInputTests {
        init() throws {
            try Harness.requireLibvirt()
        }

        private func expectUsage(_ arguments: [String], _ fragment: String, code: Int32 = 64) throws {
            let outcome = try Harness.run(arguments)
            #expect(outcome.status == code, "\(outcome.stderrText)")
            #expect(outcome.stderrText.hasPrefix("Error: "))
            #expect(outcome.stderrText.contains(fragment), "\(outcome.stderrText)")
            #expect(outcome.stdout.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: outcome.results.path), "a result folder was made")
            try Harness.expectNothingLeft()
        }

        @Test("an unknown image is named and the known ones listed")
        func unknownImage() throws {
            try expectUsage(["--image", "nope", "--workload", "examples/hello", "--", "true"], "unknown image 'nope'")
            let outcome = try Harness.run(["--image", "nope", "--workload", "examples/hello", "--", "true"])
            let known = try #require(outcome.stderrText.range(of: "known images: "))
            let names = outcome.stderrText[known.upperBound...].prefix { $0 != ")" }.split(separator: ", ")
            #expect(names.contains("tiny") && names == names.sorted(), "\(outcome.stderrText)")
        }

        @Test("a missing workload folder")
        func missingWorkload() throws {
            try expectUsage(
                ["--workload", "/nonexistent/airlock", "--", "true"],
                "workload folder '/nonexistent/airlock' does not exist")
        }

        @Test("no command")
        func noCommand() throws {
            try expectUsage(["--workload", "examples/hello"], "no command given")
        }

        @Test(
            "a non-positive timeout",
            arguments: [
                ("0", "timeout must be positive"), ("-5", "'-5' for --timeout is negative"),
                ("0s", "timeout must be positive"),
            ])
        func badTimeout(_ value: String, _ fragment: String) throws {
            try expectUsage(["--workload", "examples/hello", "--timeout", value, "--", "true"], fragment)
        }

        @Test("a timeout that is not a duration")
        func unparsableTimeout() throws {
            try expectUsage(
                ["--workload", "examples/hello", "--timeout", "soon", "--", "true"], "'soon' is not a duration")
        }

        @Test("libvirtd not reachable")
        func libvirtDown() throws {
            try expectUsage(
                [
                    "--connect", "qemu+unix:///system?socket=/nonexistent/libvirt-sock", "--workload", "examples/hello",
                    "--", "true",
                ],
                "cannot connect to libvirt", code: 69)
        }

        @Test("a host with no usable acceleration")
        func noAcceleration() throws {
            try expectUsage(
                ["--connect", "test:///default", "--workload", "examples/hello", "--", "true"],
                "no usable acceleration", code: 69)
        }

        @Test("an image whose files are missing")
        func brokenImage() throws {
            let image = try TestImages.missingFiles()
            try expectUsage(
                ["--images", TestImages.catalog.path, "--image", image, "--workload", "examples/hello", "--", "true"],
                "is missing its file", code: 66)
        }

        @Test("an unknown option is named")
        func unknownOption() throws {
            try expectUsage(
                ["--workload", "examples/hello", "--frobnicate", "--", "true"], "unknown option '--frobnicate'")
        }
    }
}
