"""An Agora worker: the Faust app with every agent (relevance, responder, tools, votes,
knowledge), as `agora worker` runs it.

Workers are symmetric (every worker runs every agent, unless AGORA_WORKER_AGENTS names a
subset), so any number of them form one consumer group and Faust spreads partitions, and
the channel table with them.
"""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import start_http_server

from ops.core.config import Settings
from ops.core.logs import configure
from streams.agents import feedback, knowledge, relevance, responder, tools, votes
from streams.app import create_app
from streams.domain.incidents.detection import load_config as load_incident_config
from streams.domain.relevance.scoring import load_config
from streams.lag import LagGauge
from streams.services import Services


def build(settings: Settings) -> faust.App:
    app = create_app(settings)
    services = Services(settings)
    # Per channel: recent messages, who spoke when, who talked with whom. Keyed like
    # the chat topic, so a channel's state lives with its partition.
    state = app.Table("channels", partitions=settings.partitions)
    agents = set(settings.worker_agents.split(","))
    if "relevance" in agents:
        relevance.register(app, services, state, load_config(settings.relevance_config),
                           load_incident_config(settings.incident_config))
    if "responder" in agents:
        responder.register(app, services, state)
    if "tools" in agents:
        tools.register(app, services)
    if "feedback" in agents:
        feedback.register(app, services)
    if "knowledge" in agents:
        knowledge.register(app, services)
    if "votes" in agents:  # open and closed votes by vote id, co-partitioned with agora.votes
        votes.register(app, services, app.Table("votes", partitions=settings.partitions))

    lag = LagGauge(settings.app_id)

    @app.timer(interval=10.0)
    async def report_lag() -> None:
        lags = {}
        for tp in app.consumer.assignment():
            position = await app.consumer.position(tp)
            end = app.consumer.highwater(tp)  # as of the last fetch
            if position is not None and end is not None:
                lags[(tp.topic, tp.partition)] = end - position
        lag.update(lags)

    @app.on_before_shutdown.connect
    async def stop_services(app: faust.App, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await services.stop()

    return app


def run(settings: Settings) -> None:
    app = build(settings)
    configure(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    # Faust's own INFO lines narrate every service start; ours are structured events.
    level = {"DEBUG": "debug", "INFO": "warn"}.get(settings.log_level.upper(), "info")
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
