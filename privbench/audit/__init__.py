"""Empirical privacy audits: canaries, epsilon lower bounds with confidence, and verdicts."""
