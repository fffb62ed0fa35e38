import AirlockCLI
import Foundation

exit(AirlockCLI.main(rawArguments: CommandLine.unsafeArgv, count: Int(CommandLine.argc)))
