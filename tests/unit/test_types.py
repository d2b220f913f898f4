"""Typed events: ``schemas/events.py`` is what the ``.avsc`` files say, and the typed
layers (``[tool.mypy]`` in pyproject.toml) pass the type checker, so a misspelt or
missing field of an event built there fails here rather than in production."""

from __future__ import annotations

import os
from pathlib import Path

from mypy import api

from schemas import typegen

ROOT = Path(__file__).resolve().parents[2]


def _mypy(*args: str) -> tuple[str, int]:
    cwd = os.getcwd()
    os.chdir(ROOT)  # the configuration's paths are the repository's
    try:
        out, err, status = api.run(["--cache-dir", os.devnull, "--config-file",
                                    str(ROOT / "pyproject.toml"), *args])
    finally:
        os.chdir(cwd)
    return out + err, status


def test_event_types_are_generated_from_the_current_schemas():
    assert typegen.OUTPUT.read_text() == typegen.render(), \
        "schemas/events.py is stale: run `python -m schemas.typegen`"


def test_the_typed_layers_type_check():
    report, status = _mypy()
    assert status == 0, report


def test_a_misspelt_field_fails_the_check(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from datetime import datetime, timezone\n"
        "from schemas.events import ChatMessage\n"
        "now = datetime.now(timezone.utc)\n"
        "message: ChatMessage = {'event_id': 'e', 'channel_id': 'c', 'thread_id': 't',\n"
        "    'author_id': 'a', 'author_kind': 'HUMAN', 'txt': 'hi', 'thread_depth': 0,\n"
        "    'created_at': now}\n"
        "kind: str = message['author_knd']\n")
    report, status = _mypy(str(probe))
    assert status == 1
    assert '"txt"' in report and 'Missing key "text"' in report and '"author_knd"' in report
