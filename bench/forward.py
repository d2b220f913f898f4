"""A bare Faust agent that only forwards records: the floor cost of Faust itself.

    python bench/forward.py SOURCE DESTINATION worker   (bench/streams.py runs it)
"""

from __future__ import annotations

import sys

from common import Settings
from streams.app import create_app

source, destination = sys.argv.pop(1), sys.argv.pop(1)
settings = Settings()
app = create_app(settings)
app.conf.id = "agora-bench-forward"  # a consumer group of its own
out = app.topic(destination, key_type=bytes, value_type=bytes)


@app.agent(app.topic(source, key_type=bytes, value_type=bytes))
async def forward(stream):
    async for event in stream.events():
        await out.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
