"""`python -m notebook_agent` runs the command-line interface."""

from notebook_agent.cli.main import main

raise SystemExit(main())
