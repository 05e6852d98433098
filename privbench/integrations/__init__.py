"""Audit what users already train: their Opacus loops and Flower strategies, gated in pytest.

Each integration is a few calls around the user's own code; canaries pass through the user's own
DP mechanism, and the scores go through privbench's audit statistics (privbench.audit).
"""
