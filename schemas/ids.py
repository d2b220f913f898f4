"""Deterministic ids of derived events (docs/ARCHITECTURE.md, delivery semantics)."""

from __future__ import annotations

import re
import uuid

_NAMESPACE = uuid.UUID("2a7c1d0e-5b7f-4c1e-8d6a-93f0e4b1c2a4")
# Ids chosen by people and programs: channels, agents, token subjects. Left out on
# purpose: "@" joins agent and worker ids in agora.agents.status keys, "|" joins the
# author pairs of channel state, "/" joins the parts of derived ids, "*" means every
# channel in a token; and nothing here needs quoting in a ClickHouse literal.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)


def derived_id(*parts: object) -> str:
    """A UUIDv5 of the source id(s) and role: a replay after a crash yields the same id,
    so consumers drop the copy."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts))))
