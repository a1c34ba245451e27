"""The key-value layer: one protocol (:mod:`.base`) and an engine per module."""

from .base import Batch, Commit, Conflict, Get, LocalBackend, Plan, Scan, Transaction

__all__ = ["Batch", "Commit", "Conflict", "Get", "LocalBackend", "Plan", "Scan", "Transaction"]
