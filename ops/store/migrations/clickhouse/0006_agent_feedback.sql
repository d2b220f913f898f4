-- Ratings of agents' replies and outcomes against them: satisfaction per agent
-- (analytics query agent_satisfaction, the agent-performance dashboard).
CREATE TABLE IF NOT EXISTS agent_feedback (
    event_id   String,
    agent_id   LowCardinality(String),
    channel_id LowCardinality(String),
    kind       LowCardinality(String),  -- RATING, TOOL_FAILED, PROPOSAL_LOST, BALLOT_LATE
    value      Int8,                    -- +1 or -1
    rater_id   Nullable(String),
    ref_id     String,
    comment    Nullable(String),
    created_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (agent_id, created_at, event_id)
TTL toDateTime(created_at) + INTERVAL 180 DAY;
