import Foundation
import Testing

@testable import Libvirt

/// The wrapper against libvirt's own test driver: real libvirt code, no daemon.
@Suite("Libvirt connection and domains")
struct ConnectionTests {
    private let xml = """
        <domain type='test'>
          <name>airlock-wrapper-test</name>
          <memory unit='MiB'>64</memory>
          <os><type>hvm</type></os>
        </domain>
        """

    @Test("a connection reports the host name and capabilities")
    func connects() throws {
        let connection = try Connection(uri: "test:///default")
        #expect(try !connection.hostname().isEmpty)
        #expect(try connection.capabilities().contains("<capabilities>"))
        #expect(connection.isAlive)
    }

    @Test("an unknown URI fails with libvirt's own message")
    func badURI() {
        do {
            _ = try Connection(uri: "qemu+unix:///system?socket=/nonexistent/sock")
            Issue.record("connected to a socket that does not exist")
        } catch {
            #expect(error.message.contains("/nonexistent/sock"))
            #expect(error.operation == "open")
        }
    }

    @Test("a transient domain can be created, paused, resumed, found by name and destroyed")
    func lifecycle() throws {
        // The test driver cannot start a domain paused; suspend does the same here.
        let connection = try Connection(uri: "test:///default")
        let domain = try connection.createDomain(xml: xml)
        try domain.suspend()
        #expect(try domain.state().isPaused)
        #expect(try domain.state().description == "paused")
        try domain.resume()
        #expect(try domain.state().isRunning)
        #expect(try connection.domain(named: "airlock-wrapper-test")?.name == "airlock-wrapper-test")
        #expect(try connection.allDomains().contains { $0.name == "airlock-wrapper-test" })
        #expect(try domain.destroy())
        #expect(try connection.domain(named: "airlock-wrapper-test") == nil)
    }

    @Test("destroying a domain that is already gone counts as done")
    func destroyTwice() throws {
        let connection = try Connection(uri: "test:///default")
        let domain = try connection.createDomain(xml: xml)
        #expect(try domain.destroy())
        #expect(try domain.destroy() == false)
    }

    @Test("malformed XML is refused with libvirt's message")
    func badXML() throws {
        let connection = try Connection(uri: "test:///default")
        #expect(throws: LibvirtError.self) { try connection.createDomain(xml: "<domain>") }
    }

    @Test("a closed connection refuses calls instead of crashing, and closing twice is fine")
    func closeTwice() throws {
        let connection = try Connection(uri: "test:///default")
        connection.close()
        connection.close()
        #expect(!connection.isAlive)
        #expect(throws: LibvirtError.self) { try connection.hostname() }
    }
}
