"""`python -m scheduler_cli` is `scheduler`."""

from scheduler_cli.main import main

main()
