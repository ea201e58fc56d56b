import Glibc
import HVFastCGI

exit(hypervisord(arguments: CommandLine.arguments))
