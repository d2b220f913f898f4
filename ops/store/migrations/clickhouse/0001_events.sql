-- 0001: every Agora event, one table per event kind, for analytics (Grafana, ad hoc SQL).
-- ops/store/clickhouse_rows.py builds the rows: COLUMNS there lists, per table, every
-- column below except ingested_at, in this order.
--
-- The runner creates and selects database agora and runs this file statement by
-- statement (split on a semicolon at the end of a line, so no comment line ends with
-- one). ClickHouse has no transactional DDL: every statement is IF NOT EXISTS, so a run
-- that stopped half way is finished by running the file again.
--
-- Conventions, for every raw table:
--   * ENGINE ReplacingMergeTree(ingested_at): a replayed event (same sorting key) is
--     collapsed on merge, keeping the last copy. Merges are eventual, so until then both
--     copies are there (count with FINAL, or dedupe in the query), and materialized views
--     see every insert: the sink also skips event ids already stored.
--   * ORDER BY (low-cardinality dimension, event time, event_id): the key is unique per
--     event (per decision and agent in relevance_scores), which is what the replacing
--     engine dedupes on, and it serves "one channel/agent/tool over a time range".
--   * PARTITION BY toYYYYMM(event time): an event field, never ingested_at, so that a
--     replay lands in the same partition as the original (replacing works only inside
--     a partition). Monthly partitions keep the number of parts low at this volume.
--   * TTL toDateTime(event time) + 180 days. The toDateTime() is needed: a DateTime64
--     TTL expression is refused before ClickHouse 25.7. Aggregates have no TTL.
--   * Times DateTime64(3, 'UTC') (Avro timestamp-millis). Avro int is Int32 and long
--     Int64 (signed, as in Avro). Avro enums and ids with few distinct values are
--     LowCardinality(String), so a new enum symbol needs no migration. Nullable only
--     where the Avro field is nullable.
--   * ingested_at: when the row reached ClickHouse, the replacing version column.

CREATE TABLE IF NOT EXISTS chat_messages (
    event_id     String,
    channel_id   LowCardinality(String),
    thread_id    String,
    reply_to     Nullable(String),
    author_id    LowCardinality(String),  -- people and agents: thousands at most
    author_kind  LowCardinality(String),  -- HUMAN, AGENT, SYSTEM
    text         String,
    text_length  UInt32,                  -- characters (code points) of text
    mentions     Array(String),
    thread_depth Int32,
    created_at   DateTime64(3, 'UTC'),
    task_id      Nullable(String),
    metadata     Map(String, String),
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (channel_id, created_at, event_id)
TTL toDateTime(created_at) + INTERVAL 180 DAY;

-- One row per decision. The per-agent scores are in relevance_scores.
CREATE TABLE IF NOT EXISTS relevance_decisions (
    event_id       String,
    message_id     String,
    channel_id     LowCardinality(String),
    thread_id      String,
    thread_depth   Int32,
    decided_at     DateTime64(3, 'UTC'),
    selected       Array(String),           -- agent_ids, best first
    considered     UInt32,                  -- number of agents scored
    skip_reason    Nullable(String),
    config_version LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY (channel_id, decided_at, event_id)
TTL toDateTime(decided_at) + INTERVAL 180 DAY;

-- One row per (decision, agent scored): RelevanceDecision.scores flattened, so that
-- "why did agent X answer, and how do its factors move" is a plain GROUP BY. event_id is
-- the decision's id, not unique here: agent_id in the sorting key makes the key unique
-- (the sink keeps the first score of an agent listed twice in one decision).
CREATE TABLE IF NOT EXISTS relevance_scores (
    event_id       String,                  -- RelevanceDecision.event_id
    message_id     String,
    channel_id     LowCardinality(String),
    decided_at     DateTime64(3, 'UTC'),
    agent_id       LowCardinality(String),
    score          Float64,
    expertise      Float64,
    workload       Float64,
    social         Float64,
    timing         Float64,
    quality        Float64,
    selected       Bool,
    selected_rank  UInt16,                  -- 1-based position in the decision's selected list, 0 when not selected
    reason         String,                  -- prose with the numbers in it: not low-cardinality
    config_version LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY (agent_id, decided_at, event_id)
TTL toDateTime(decided_at) + INTERVAL 180 DAY;

CREATE TABLE IF NOT EXISTS inference_tasks (
    event_id            String,
    decision_id         String,
    message_id          String,
    channel_id          LowCardinality(String),
    thread_id           String,
    thread_depth        Int32,
    agent_id            LowCardinality(String),
    context_message_ids Array(String),
    created_at          DateTime64(3, 'UTC'),
    deadline_at         Nullable(DateTime64(3, 'UTC')),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (agent_id, created_at, event_id)
TTL toDateTime(created_at) + INTERVAL 180 DAY;

-- A ToolRequest comes on several topics with the same event_id (requests, votes,
-- approved): the sink's id check and the replacing engine keep one row.
CREATE TABLE IF NOT EXISTS tool_requests (
    event_id          String,
    channel_id        LowCardinality(String),
    agent_id          LowCardinality(String),
    tool              LowCardinality(String),
    -- Always valid JSON, for JSONExtract*: arguments_json re-serialised when it parses,
    -- else that text as a JSON string (arguments_valid = false).
    arguments         String,
    arguments_valid   Bool,
    reason            String,
    source_message_id Nullable(String),
    requested_at      DateTime64(3, 'UTC'),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(requested_at)
ORDER BY (tool, requested_at, event_id)
TTL toDateTime(requested_at) + INTERVAL 180 DAY;

CREATE TABLE IF NOT EXISTS tool_results (
    event_id    String,
    request_id  String,
    channel_id  LowCardinality(String),
    agent_id    LowCardinality(String),
    tool        LowCardinality(String),
    status      LowCardinality(String),  -- OK, DENIED, REJECTED, FAILED, TIMEOUT
    output      String,
    error       Nullable(String),
    artifacts   Array(String),
    vote_id     Nullable(String),
    started_at  Nullable(DateTime64(3, 'UTC')),
    finished_at DateTime64(3, 'UTC'),
    duration_ms Int64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(finished_at)
ORDER BY (tool, finished_at, event_id)
TTL toDateTime(finished_at) + INTERVAL 180 DAY;

CREATE TABLE IF NOT EXISTS vote_proposals (
    event_id        String,
    vote_id         String,
    channel_id      LowCardinality(String),
    proposer_id     LowCardinality(String),
    vote_type       LowCardinality(String),
    strategy        LowCardinality(String),
    title           String,
    description     String,
    options         Array(String),
    eligible_voters Array(String),
    weights         Map(String, Float64),
    quorum          Float64,
    deadline_at     DateTime64(3, 'UTC'),
    created_at      DateTime64(3, 'UTC'),
    tool_request_id Nullable(String),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (channel_id, created_at, event_id)
TTL toDateTime(created_at) + INTERVAL 180 DAY;

-- Every ballot cast, counted or not: a BallotRejected (ballot_rejections) names the
-- ones that were not counted, by ballot_event_id.
CREATE TABLE IF NOT EXISTS ballots (
    event_id    String,
    vote_id     String,
    channel_id  LowCardinality(String),
    voter_id    LowCardinality(String),
    choice      String,
    rationale   String,
    cast_at     DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(cast_at)
ORDER BY (channel_id, cast_at, event_id)
TTL toDateTime(cast_at) + INTERVAL 180 DAY;

CREATE TABLE IF NOT EXISTS vote_results (
    event_id        String,
    vote_id         String,
    channel_id      LowCardinality(String),
    vote_type       LowCardinality(String),
    strategy        LowCardinality(String),
    outcome         LowCardinality(String),  -- PASSED, FAILED, NO_QUORUM, TIED, EXPIRED
    winning_option  Nullable(String),
    tally           Map(String, Float64),
    ballots_counted Int32,
    eligible_count  Int32,
    reason          String,
    closed_at       DateTime64(3, 'UTC'),
    tool_request_id Nullable(String),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(closed_at)
ORDER BY (channel_id, closed_at, event_id)
TTL toDateTime(closed_at) + INTERVAL 180 DAY;

-- channel_id is nullable in the event, and a nullable column cannot be in a sorting
-- key without allow_nullable_key: the reason leads the key instead.
CREATE TABLE IF NOT EXISTS ballot_rejections (
    event_id        String,
    vote_id         String,
    voter_id        LowCardinality(String),
    ballot_event_id String,
    reason          LowCardinality(String),  -- DUPLICATE, LATE, INELIGIBLE, UNKNOWN_VOTE, INVALID_CHOICE
    detail          String,
    rejected_at     DateTime64(3, 'UTC'),
    channel_id      LowCardinality(Nullable(String)),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(rejected_at)
ORDER BY (reason, rejected_at, event_id)
TTL toDateTime(rejected_at) + INTERVAL 180 DAY;

-- Every version of every agent profile (the topic is compacted, this is its history).
-- The latest per agent: argMax(..., (updated_at, event_id)) GROUP BY agent_id.
-- No TTL: versions are rare, and an agent unchanged for 180 days would otherwise lose
-- its only profile (its name and template, which the other tables only reference).
CREATE TABLE IF NOT EXISTS agent_profiles (
    event_id          String,
    agent_id          LowCardinality(String),
    name              String,
    template          LowCardinality(String),
    persona           String,
    system_prompt     String,
    expertise         String,
    tools             Array(String),
    channels          Array(String),
    permissions       Array(String),
    state             LowCardinality(String),  -- ACTIVE, WORKING, PAUSED, ERROR, MAINTENANCE
    state_reason      Nullable(String),
    performance_score Float64,
    created_at        DateTime64(3, 'UTC'),
    updated_at        DateTime64(3, 'UTC'),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(updated_at)
ORDER BY (agent_id, updated_at, event_id);

-- Every status update of every (agent, responder worker): the workload over time.
CREATE TABLE IF NOT EXISTS agent_status (
    event_id       String,
    agent_id       LowCardinality(String),
    worker_id      LowCardinality(String),
    state          LowCardinality(String),  -- IDLE, WORKING, ERROR
    open_tasks     Int32,
    finished_tasks Int64,
    last_error     Nullable(String),
    updated_at     DateTime64(3, 'UTC'),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(updated_at)
ORDER BY (agent_id, updated_at, event_id)
TTL toDateTime(updated_at) + INTERVAL 180 DAY;

-- key, value and the header values are the raw Kafka bytes as base64 text (String
-- holds any bytes, but base64 keeps the rows printable and the query tools happy).
-- partition and offset are renamed source_partition and source_offset, beside
-- source_topic, and away from the PARTITION and OFFSET keywords.
CREATE TABLE IF NOT EXISTS dead_letters (
    event_id         String,
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    key              Nullable(String),
    value            Nullable(String),
    headers          Map(String, String),
    source_timestamp Nullable(DateTime64(3, 'UTC')),
    reason           String,
    error_type       LowCardinality(String),
    stage            LowCardinality(String),
    attempts         Int32,
    failed_at        DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (stage, failed_at, event_id)
TTL toDateTime(failed_at) + INTERVAL 180 DAY;

-- No low-cardinality dimension in this event: time leads the key (dashboards of the
-- timer's lag over time).
CREATE TABLE IF NOT EXISTS vote_deadlines (
    event_id    String,
    vote_id     String,
    deadline_at DateTime64(3, 'UTC'),
    noticed_at  DateTime64(3, 'UTC'),
    lag_ms      Int64,  -- noticed_at - deadline_at: how late the timer noticed
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(noticed_at)
ORDER BY (noticed_at, event_id)
TTL toDateTime(noticed_at) + INTERVAL 180 DAY;

-- Per-minute aggregates. Each materialized view writes TO a SummingMergeTree table, on
-- every insert into its source: rows with the same key are summed on merge, so read
-- them with sum(...) GROUP BY, never a bare SELECT. A materialized view sees every
-- insert, replays included (the replacing engine of the source does not help here),
-- which is why the sink skips event ids already stored. The minute is the event's time,
-- not ingested_at, so late events land in their own minute. No TTL: one row per key and
-- minute outlives the raw rows cheaply.

CREATE TABLE IF NOT EXISTS messages_per_minute (
    channel_id  LowCardinality(String),
    author_kind LowCardinality(String),
    minute      DateTime('UTC'),
    messages    UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (channel_id, author_kind, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS messages_per_minute_mv TO messages_per_minute AS
SELECT channel_id, author_kind, toStartOfMinute(created_at) AS minute, count() AS messages
FROM chat_messages
GROUP BY channel_id, author_kind, minute;

CREATE TABLE IF NOT EXISTS relevance_per_minute (
    agent_id      LowCardinality(String),
    minute        DateTime('UTC'),
    considered    UInt64,
    selected      UInt64,
    sum_score     Float64,
    sum_expertise Float64,
    sum_workload  Float64,
    sum_social    Float64,
    sum_timing    Float64,
    sum_quality   Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (agent_id, minute);

-- A non-finite factor (NaN from a failed embedding, say) counts as 0 here: one NaN
-- would otherwise turn a sum into NaN for good. relevance_scores keeps the raw value.
-- The subquery renames selected to is_selected: with an output alias equal to a source
-- column (countIf(selected) AS selected) the old query analyzer, the default before
-- 24.3 and selectable until 26.9, reads the alias back into the aggregate and refuses
-- it as a nested aggregate. The subquery form works with both analyzers.
CREATE MATERIALIZED VIEW IF NOT EXISTS relevance_per_minute_mv TO relevance_per_minute AS
SELECT
    agent_id,
    minute,
    count() AS considered,
    countIf(is_selected) AS selected,
    sum(f_score) AS sum_score,
    sum(f_expertise) AS sum_expertise,
    sum(f_workload) AS sum_workload,
    sum(f_social) AS sum_social,
    sum(f_timing) AS sum_timing,
    sum(f_quality) AS sum_quality
FROM (
    SELECT
        agent_id,
        toStartOfMinute(decided_at) AS minute,
        selected AS is_selected,
        if(isFinite(score), score, 0) AS f_score,
        if(isFinite(expertise), expertise, 0) AS f_expertise,
        if(isFinite(workload), workload, 0) AS f_workload,
        if(isFinite(social), social, 0) AS f_social,
        if(isFinite(timing), timing, 0) AS f_timing,
        if(isFinite(quality), quality, 0) AS f_quality
    FROM relevance_scores
)
GROUP BY agent_id, minute;

CREATE TABLE IF NOT EXISTS tool_runs_per_minute (
    tool              LowCardinality(String),
    status            LowCardinality(String),
    minute            DateTime('UTC'),
    runs              UInt64,
    total_duration_ms Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tool, status, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS tool_runs_per_minute_mv TO tool_runs_per_minute AS
SELECT tool, status, toStartOfMinute(finished_at) AS minute, count() AS runs,
       sum(duration_ms) AS total_duration_ms
FROM tool_results
GROUP BY tool, status, minute;
