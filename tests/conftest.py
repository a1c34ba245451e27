"""Shared fixtures: the store kinds the conformance suite runs over."""

from __future__ import annotations
