-- The tool-run ledger (streams/agents/tools.py): every sandboxed run is claimed here,
-- by request id, before it starts, marked running as the sandbox starts it, and holds
-- its outcome once done. A replayed request (a worker died before its offset was
-- committed) finds its row: a finished run's outcome is published again instead of
-- running again; a run interrupted while running is failed with the reason, not run a
-- second time, when the tool has external effects (streams/domain/tools/runs.py).
CREATE TABLE tool_ledger (
    request_id  text PRIMARY KEY,
    tool        text NOT NULL,
    state       text NOT NULL CHECK (state IN ('claimed', 'running', 'done', 'failed')),
    worker_id   text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    status      text,     -- the ToolResult status once finished
    outcome     bytea[]   -- the events it published, encoded (schemas/codec), in order
);
