"""A run: one cell as a pure work unit, the runner over a backend, the one results store, and the
content-addressed run folder."""
