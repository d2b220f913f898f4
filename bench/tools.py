"""What the sandbox costs: a tool run in the sandbox vs the same tool in a bare
Python subprocess (same interpreter, same tool code, no namespaces, rlimits or
Landlock), side by side in one run.

    .venv/bin/python bench/tools.py [RUNS]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts the repository first on sys.path
from streams.domain.tools import catalog
from streams.tools import sandbox

BARE = ("import json, sys; from pathlib import Path; from {module} import {function}; "
        "print(json.dumps({function}(json.loads(sys.argv[1]), Path('.'))))")


async def bare(tool: catalog.Tool, arguments: dict, workdir: Path) -> None:
    import json

    module, _, function = tool.entrypoint.partition(":")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", BARE.format(module=module, function=function),
        json.dumps(arguments), cwd=workdir, stdout=asyncio.subprocess.PIPE)
    await proc.communicate()
    assert proc.returncode == 0


async def timed(runs: int, call) -> list[float]:
    seconds = []
    for i in range(runs):
        started = time.perf_counter()
        await call(i)
        seconds.append(time.perf_counter() - started)
    return seconds


async def main(runs: int) -> None:
    if sandbox.unavailable():
        sys.exit(f"no sandbox on this host: {sandbox.unavailable()}")
    tools = catalog.load()
    cases = [("calculator", {"expression": "0.17 * 2340"}),
             ("chart_generator", {"kind": "bar", "title": "t", "labels": ["a", "b"],
                                  "values": [1, 2]})]
    root = Path(tempfile.mkdtemp(prefix="agora-bench-tools-"))
    lines = []
    for name, arguments in cases:
        tool = tools[name]

        async def ours(i: int) -> None:
            result = await sandbox.run(tool, arguments, root / f"{name}-ours-{i}")
            assert result.status == "OK", result.error

        async def theirs(i: int) -> None:
            workdir = root / f"{name}-bare-{i}"
            workdir.mkdir()
            await bare(tool, arguments, workdir)

        await theirs(-1)  # warm the page cache for both
        sandboxed, plain = await timed(runs, ours), await timed(runs, theirs)
        ratio = statistics.median(plain) / statistics.median(sandboxed)
        print(f"{name}: sandboxed p50 {statistics.median(sandboxed) * 1000:.1f} ms, "
              f"bare subprocess p50 {statistics.median(plain) * 1000:.1f} ms "
              f"({runs} runs each)")
        lines.append(f"RATIO sandbox_{name}_runs_per_s {ratio:.3f} target 0.5")
    shutil.rmtree(root, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
