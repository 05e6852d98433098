"""The command line: `python -m privbench <command>`."""
