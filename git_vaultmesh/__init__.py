"""git-vaultmesh: the repo is the ledger."""

__version__ = "0.1.0"
