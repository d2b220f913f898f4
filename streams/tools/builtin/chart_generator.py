"""Bar, line and pie charts as PNG files in the work directory (matplotlib, Agg)."""

from __future__ import annotations

import math
import os
import pathlib
import re

from streams.tools.builtin import ToolError

FILENAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.png")


def _validate(arguments: dict) -> tuple[str, list[str], list[float], str]:
    kind, labels, values = arguments["kind"], arguments["labels"], arguments["values"]
    filename = arguments.get("filename", "chart.png")
    if not FILENAME.fullmatch(filename) or len(filename) > 60:
        raise ToolError(f"bad filename {filename!r}: use a plain name like 'sales.png' "
                        "(letters, digits, . _ -; no folders, no leading dot; must end in .png)")
    if not labels or len(labels) != len(values):
        raise ToolError(f"labels and values must have the same non-zero length "
                        f"(got {len(labels)} labels, {len(values)} values)")
    if not all(math.isfinite(v) for v in values):
        raise ToolError("values must be finite numbers")
    if kind == "pie" and (any(v < 0 for v in values) or sum(values) <= 0):
        raise ToolError("pie chart values must be non-negative with a positive total")
    return kind, labels, [float(v) for v in values], filename


def _plain(text: str) -> str:
    return text.replace("$", r"\$")  # matplotlib would parse $...$ as math text


def run(arguments: dict, workdir: pathlib.Path) -> dict:
    kind, labels, values, filename = _validate(arguments)
    title = arguments["title"]
    os.environ["MPLCONFIGDIR"] = str(workdir)  # font cache must stay inside the sandbox
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # numpy's BLAS threads would count against the process limit
    import matplotlib  # heavy: loaded when a chart is drawn, once MPLCONFIGDIR is set
    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    names = [_plain(label) for label in labels]
    if kind == "pie":
        ax.pie(values, labels=names, startangle=90, counterclock=False,
               autopct=lambda pct: f"{pct:.1f}%" if pct >= 1 else "")  # no "0.0%" clutter
        ax.set_aspect("equal")
    else:
        positions = range(len(values))  # numeric x: duplicate labels stay separate points
        if kind == "bar":
            ax.bar(positions, values, color="#4C72B0")
        else:
            ax.plot(positions, values, marker="o", color="#4C72B0")
        crowded = len(labels) > 6 or max(map(len, labels)) > 8
        ax.set_xticks(list(positions), names, rotation=45 if crowded else 0,
                      ha="right" if crowded else "center")
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(_plain(title))
    fig.tight_layout()
    # O_NOFOLLOW: never write through a symlink planted in the work directory
    try:
        fd = os.open(workdir / filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ToolError(f"cannot write {filename}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fig.savefig(fh, format="png")
    points = len(values)
    return {"output": f'wrote {filename}: {kind} chart "{title}" with {points} point{"s" * (points != 1)}',
            "artifacts": [filename]}
