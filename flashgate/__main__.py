"""`python -m flashgate` runs the `flashgate` command."""

from flashgate.cli import main

main()
