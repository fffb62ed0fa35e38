import Foundation
import Testing

@testable import Airlock

@Suite("QEMUConfinement")
struct QEMUConfinementTests {
    @Test("the effective uid and the seccomp mode are read from /proc/PID/status")
    func parse() throws {
        let confined = try #require(
            QEMUConfinement.parse(status: "Name:\tqemu-system-x86\nUid:\t64055\t64055\t64055\t64055\nSeccomp:\t2\n"))
        #expect(confined.uid == 64055 && confined.seccomp && confined.isConfined)
        let root = try #require(QEMUConfinement.parse(status: "Uid:\t0\t0\t0\t0\nSeccomp:\t0\n"))
        #expect(root.user == "root" && !root.seccomp && !root.isConfined)
        // Seccomp mode 1 (strict) is not the filter libvirt installs.
        #expect(QEMUConfinement.parse(status: "Uid:\t5\t5\t5\t5\nSeccomp:\t1\n")?.isConfined == false)
        #expect(QEMUConfinement.parse(status: "Name:\tx\n") == nil)
    }

    @Test("this test process itself reads as it is")
    func ownProcess() throws {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let me = try #require(QEMUConfinement.parse(status: status))
        #expect(me.uid == geteuid())
    }
}
