"""Deterministic ids of derived events (docs/ARCHITECTURE.md, delivery semantics)."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("2a7c1d0e-5b7f-4c1e-8d6a-93f0e4b1c2a4")


def derived_id(*parts: object) -> str:
    """A UUIDv5 of the source id(s) and role: a replay after a crash yields the same id,
    so consumers drop the copy."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts))))
