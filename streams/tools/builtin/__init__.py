"""Built-in tools. Each module exposes run(arguments, workdir) -> {"output", "artifacts"}.

Modules run inside the sandbox; keep imports here light (no heavy libraries).
"""


class ToolError(Exception):
    """A tool could not do what was asked; the message is shown to the agent."""


class LimitExceeded(ToolError):
    """A process of the tool hit the sandbox's CPU limit; the run ends as TIMEOUT."""
