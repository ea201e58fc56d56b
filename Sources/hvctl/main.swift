import Glibc
import HVFastCGI

exit(hvctl(arguments: CommandLine.arguments))
