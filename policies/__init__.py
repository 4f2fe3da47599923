"""Trusted, pure policy rules: scenarios, grades, thresholds, decisions.

Imports nothing of ours; every other package may import it.
"""
