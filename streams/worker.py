"""An Agora worker: the Faust app with every agent, as `agora worker` runs it.

Workers are symmetric (every worker runs every agent), so any number of them form
one consumer group and Faust spreads partitions, and the channel table with them.
"""

from __future__ import annotations

import faust

from ops.config import Settings
from ops.logs import configure
from streams.app import create_app
from streams.relevance import agent as relevance
from streams.relevance.scoring import load_config
from streams.responder import agent as responder
from streams.services import Services


def build(settings: Settings) -> faust.App:
    app = create_app(settings)
    services = Services(settings)
    # Per channel: recent messages, who spoke when, who talked with whom. Keyed like
    # the chat topic, so a channel's state lives with its partition.
    state = app.Table("channels", partitions=settings.partitions)
    relevance.register(app, services, state, load_config(settings.relevance_config))
    responder.register(app, services, state)

    @app.on_before_shutdown.connect
    async def stop_services(app, **kwargs) -> None:  # noqa: ARG001 - signal signature
        await services.stop()

    return app


def run(settings: Settings) -> None:
    app = build(settings)
    configure(settings)
    # Faust's own INFO lines narrate every service start; ours are structured events.
    level = "debug" if settings.log_level.upper() == "DEBUG" else "warn"
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
