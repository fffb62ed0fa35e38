import AirlockCLI
import Foundation

exit(AirlockCLI.main(Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment))
