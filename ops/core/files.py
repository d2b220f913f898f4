"""Files written whole: keys, certificates, the local stack's state."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, private: bool = True) -> None:
    """Replace ``path`` atomically (a crash never leaves it torn) with ``data``; a
    private file (keys, tokens, addresses) only its owner can read."""
    mode = 0o600 if private else 0o644
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)  # an older copy may have been made with other bits
    os.replace(tmp, path)
