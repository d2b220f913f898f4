"""The ``agora`` command line."""

from __future__ import annotations

import shlex

import typer

from ops import stack as local_stack
from ops.config import Settings, documented
from ops.logs import configure

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Agora: a streaming backend for channels shared by AI agents and people.")
stack_app = typer.Typer(no_args_is_help=True, help="The embedded local stack (no Docker).")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics of the flow.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
agents_app = typer.Typer(no_args_is_help=True, help="The agent registry (agora.agents).")
app.add_typer(agents_app, name="agents")


def _settings() -> Settings:
    settings = Settings()
    configure(settings)
    return settings


def _progress(line: str) -> None:
    # Progress goes to stderr so that stdout stays parseable.
    typer.echo(line, err=True)


@stack_app.command("up")
def stack_up() -> None:
    """Start every service (idempotent; repairs a stale state from a crashed run)."""
    settings = _settings()
    local_stack.up(settings.stack_dir, progress=_progress)
    typer.echo(f"stack is up; state in {settings.stack_dir.resolve()}", err=True)


@stack_app.command("status")
def stack_status() -> None:
    """Each service, its state and address. Exit 1 unless all are up."""
    rows = local_stack.status(_settings().stack_dir)
    for row in rows:
        pid = f"pid {row.pid}" if row.pid else "in-process"
        typer.echo(f"{row.name:<11} {row.state:<6} {row.address:<45} {pid:<11} {row.describe}")
    if any(row.state != "up" for row in rows):
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env() -> None:
    """Print the AGORA_* exports of the running stack: eval "$(agora stack env)"."""
    values = local_stack.env(_settings().stack_dir)
    if not values:
        typer.echo("the stack is not up (agora stack up)", err=True)
        raise typer.Exit(1)
    for key, value in values.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop every process the stack started, by process group, and clean up."""
    local_stack.down(_settings().stack_dir, progress=_progress)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic with its partition count and cleanup policy (idempotent)."""
    from ops.topics import ensure_topics

    for t in ensure_topics(_settings()):
        typer.echo(f"{t.name:<28} partitions={t.partitions} {t.action}")


@app.command("worker")
def worker() -> None:
    """Run a worker: relevance and responder agents (workers form one consumer group)."""
    from streams.worker import run

    run(_settings())


def _registry():
    from streams.registry.profiles import Registry

    return Registry(_settings())


@agents_app.command("create")
def agents_create(
    template: str = typer.Option(..., "--template", "-t", help="Template name."),
    channel: str = typer.Option(..., "--channel", "-c", help="Channel the agent joins."),
    agent_id: str = typer.Option(None, "--id", help="Agent id (default: the template name)."),
    name: str = typer.Option(None, "--name", help="Display name."),
) -> None:
    """Create an agent from a template (or add a channel to an existing one)."""
    try:
        profile, action = _registry().create(template, channel, agent_id, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"{profile['agent_id']} {action}: {profile['name']} in "
               f"{', '.join(profile['channels'])}")


@agents_app.command("list")
def agents_list() -> None:
    """Every agent with its state, channels and tools."""
    from streams.registry.profiles import templates

    profiles = _registry().load()
    if not profiles:
        typer.echo(f"no agents yet; templates: {', '.join(templates())}", err=True)
    for p in sorted(profiles.values(), key=lambda p: p["agent_id"]):
        typer.echo(f"{p['agent_id']:<22} {p['state']:<11} {p['template']:<19} "
                   f"channels={','.join(p['channels'])} tools={','.join(p['tools'])}")


def _set_state(agent_id: str, state: str, reason: str | None) -> None:
    try:
        profile = _registry().set_state(agent_id, state, reason)
    except KeyError as exc:
        typer.echo(exc.args[0], err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{profile['agent_id']} is {profile['state']}")


@agents_app.command("pause")
def agents_pause(agent_id: str, reason: str = typer.Option(None, help="Why.")) -> None:
    """Stop selecting the agent for new messages."""
    _set_state(agent_id, "PAUSED", reason)


@agents_app.command("resume")
def agents_resume(agent_id: str) -> None:
    """Make a paused agent active again."""
    _set_state(agent_id, "ACTIVE", None)


@app.command("config")
def config() -> None:
    """Every setting: variable, default and meaning; then the values in effect."""
    settings = _settings()
    for var, default, description in documented():
        value = getattr(settings, var.removeprefix("AGORA_").lower())
        typer.echo(f"{var:<28} = {value}\n    default {default!r}: {description}")


@app.command("demo")
def demo(keep: bool = typer.Option(False, "--keep", help="Leave the stack running.")) -> None:
    """Start the embedded stack and exercise every service once."""
    from ops import demo as scenario

    scenario.run(_settings(), typer.echo, keep=keep)

