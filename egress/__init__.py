"""The egress gate.

DP SQL, privacy ledger, disclosure and reversibility checks, reviews, releases.
"""
