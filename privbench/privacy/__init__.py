"""Privacy: accounting (one entry point), the Claim a model carries, the ledger, the privacy card
and the per-round budget monitor."""
