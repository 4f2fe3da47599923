"""Runs untrusted code. The host side lives here; ``sandbox/agent`` runs inside the container.

Kept empty on purpose: ``sandbox.agent`` must import without pulling in host-side modules.
"""
