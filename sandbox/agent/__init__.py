"""Runs inside the sandbox container.

Imports nothing of ours: only pyarrow, duckdb, RestrictedPython, numpy, scikit-learn.
"""
