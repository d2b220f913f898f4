"""What a worker's agents share: the registry, agent status, inference, memory, the
knowledge base, the tool-run ledger, incident tickets, the on-call rota and feedback.

Started once per worker, before any agent handles a record.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from inference.client import InferenceClient
from ops.core.config import Settings
from ops.core.errors import Unavailable
from ops.core.globaltable import GlobalTable
from ops.core.retry import Retry, forever, retrying
from ops.store.feedback import FeedbackStore
from ops.store.knowledge import KnowledgeStore
from ops.store.ledger import ToolLedger
from ops.store.memory import open_memory
from ops.store.oncall import OncallStore
from ops.store.tickets import TicketStore
from schemas import codec
from schemas.events import AgentProfile, AgentStatus
from schemas.topics import AGENT_STATUS, AGENTS, VOTE_RESULTS

T = TypeVar("T")


async def stored(call: Callable[..., T], *args, **kwargs) -> T:
    """``call(*args, **kwargs)`` on a synchronous store (Postgres, memory), in a thread,
    waiting out the store's outages (``Unavailable``) however long: the record being
    handled, and the stream behind it, wait with their offsets uncommitted, as for a
    Triton outage, instead of failing."""
    return await retrying(lambda: asyncio.to_thread(call, *args, **kwargs),
                          Retry(stop=forever()), (Unavailable,), "store_retry",
                          what=getattr(call, "__qualname__", repr(call)))


def _approval(value: bytes) -> dict | None:
    """A passed tool-usage vote (what the tools agent needs to run its request)."""
    name, record = codec.decode(value)
    if name != "VoteResult" or record["vote_type"] != "TOOL_USAGE" or \
            record["outcome"] != "PASSED" or record["winning_option"] != "yes":
        return None
    return {"tool_request_id": record["tool_request_id"],
            "request_sha256": record["request_sha256"]}


class Services:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry: GlobalTable[AgentProfile] = GlobalTable(
            settings, AGENTS.name, codec.records_of(AgentProfile))
        self.status: GlobalTable[AgentStatus] = GlobalTable(
            settings, AGENT_STATUS.name, codec.records_of(AgentStatus))
        # Passed tool-usage votes by vote id: an approved tool request runs only with one.
        self.approvals: GlobalTable[dict] = GlobalTable(settings, VOTE_RESULTS.name, _approval)
        self.memory = open_memory(settings.memory)
        self.knowledge = KnowledgeStore(settings.postgres_dsn)
        self.ledger = ToolLedger(settings.postgres_dsn)
        self.tickets = TicketStore(settings.postgres_dsn)
        self.oncall = OncallStore(settings.postgres_dsn)
        self.feedback = FeedbackStore(settings.postgres_dsn)
        self._inference: InferenceClient | None = None
        self._started: asyncio.Task | None = None

    async def ready(self) -> None:
        """Start everything once; every agent awaits this before its first record."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        self._inference = InferenceClient(self.settings.triton_grpc,
                                          timeout_s=self.settings.inference_timeout_s)
        await asyncio.gather(self.registry.start(), self.status.start(), self.approvals.start())

    async def stop(self) -> None:
        await asyncio.gather(self.registry.stop(), self.status.stop(), self.approvals.stop(),
                             return_exceptions=True)
        if self._inference:
            await self._inference.close()
        await asyncio.to_thread(self.memory.close)
        await asyncio.to_thread(self.knowledge.close)
        await asyncio.to_thread(self.ledger.close)
        await asyncio.to_thread(self.tickets.close)
        await asyncio.to_thread(self.oncall.close)
        await asyncio.to_thread(self.feedback.close)

    @property
    def inference(self) -> InferenceClient:
        """The Triton client, made by ``ready()`` (it needs the running loop)."""
        if self._inference is None:
            raise RuntimeError("Services.ready() has not been awaited")
        return self._inference

    def open_tasks(self) -> dict[str, int]:
        """Workload per agent: open tasks summed over the responder workers."""
        totals: dict[str, int] = defaultdict(int)
        for status in self.status.values():
            totals[status["agent_id"]] += status["open_tasks"]
        return totals
