"""Governance: consent and onboarding of clients, encryption and signatures, the audit trail, and
personal layers."""
