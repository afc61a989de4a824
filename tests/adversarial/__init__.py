"""The tamper matrix (issue "Reliability and security"): attacks on a real ledger, each must be rejected.

A package (unlike tests/), so that this directory's conftest.py is imported as `adversarial.conftest` and
never shadows the top-level `conftest` module that test files import helpers from.
"""
