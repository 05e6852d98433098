"""`python -m privbench`: the command-line interface."""

from privbench.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
