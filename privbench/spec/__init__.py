"""The suite spec: its pydantic schema, the checks run before any cell, loading and `--set`
overrides, and suites expanded into cells."""
