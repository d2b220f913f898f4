-- Feedback about agents (AgentFeedback, ops/store/postgres_rows.py): ratings of replies
-- and outcomes. Written by the gateway (a rating, before it is published: one per
-- person per reply), by the feedback agent (which sums it into the agent's score) and
-- by the sink; all three insert the same row, keyed by the event id.
CREATE TABLE agent_feedback (
    event_id    text PRIMARY KEY,
    agent_id    text NOT NULL,
    channel_id  text NOT NULL,
    kind        text NOT NULL
                CHECK (kind IN ('RATING', 'TOOL_FAILED', 'PROPOSAL_LOST', 'BALLOT_LATE', 'UNKNOWN')),
    value       integer NOT NULL CHECK (value IN (-1, 1)),
    rater_id    text,
    ref_id      text NOT NULL,
    comment     text,
    created_at  timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_feedback_agent_idx ON agent_feedback (agent_id, created_at);
