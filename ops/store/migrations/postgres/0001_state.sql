-- 0001: the state the product reads, written by the Postgres sink
-- (ops/store/postgres_rows.py holds every statement that writes these tables).
--
-- Every events table is keyed by the id of the event that fills it, so a replayed
-- event changes nothing. Identifiers are text: event ids are UUID strings, agent and
-- channel ids are free-form strings. Enum-like columns carry CHECK constraints that
-- list the Avro enum symbols (the codec maps unknown future symbols to the enum's
-- default, so a newer producer never breaks them). Maps and structured values are
-- jsonb, string arrays text[], times timestamptz.
--
-- The migration runner wraps this file in a transaction.

-- Reference data: upserted by `agora db migrate` on every run, not by events.

CREATE TABLE agent_templates (
    template          text PRIMARY KEY,
    name              text NOT NULL,
    persona           text NOT NULL,
    system_prompt     text NOT NULL,
    expertise         text NOT NULL,
    tools             text[] NOT NULL DEFAULT '{}',
    permissions       text[] NOT NULL DEFAULT '{}',
    performance_score double precision NOT NULL,
    loaded_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tool_definitions (
    name          text PRIMARY KEY,
    category      text NOT NULL,
    description   text NOT NULL,
    parameters    jsonb NOT NULL,
    permissions   text[] NOT NULL DEFAULT '{}',
    needs_vote    boolean NOT NULL,
    network       boolean NOT NULL,
    limits        jsonb NOT NULL,
    vote_strategy text NOT NULL
        CHECK (vote_strategy IN ('SIMPLE_MAJORITY', 'QUALIFIED_MAJORITY', 'CONSENSUS', 'WEIGHTED')),
    vote_quorum   double precision NOT NULL CHECK (vote_quorum BETWEEN 0 AND 1),
    loaded_at     timestamptz NOT NULL DEFAULT now()
);

-- Agents (AgentProfile, compacted topic agora.agents): the latest profile wins by
-- (updated_at, event_id), whatever order the versions arrive in.
CREATE TABLE agents (
    agent_id          text PRIMARY KEY,
    event_id          text NOT NULL,
    name              text NOT NULL,
    template          text NOT NULL,
    persona           text NOT NULL,
    system_prompt     text NOT NULL,
    expertise         text NOT NULL,
    tools             text[] NOT NULL DEFAULT '{}',
    channels          text[] NOT NULL DEFAULT '{}',
    permissions       text[] NOT NULL DEFAULT '{}',
    state             text NOT NULL
        CHECK (state IN ('ACTIVE', 'WORKING', 'PAUSED', 'ERROR', 'MAINTENANCE')),
    state_reason      text,
    performance_score double precision NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    ingested_at       timestamptz NOT NULL DEFAULT now()
);

-- Working state per agent and responder worker (AgentStatus, one writer per key);
-- latest wins by (updated_at, event_id). An agent's workload is sum(open_tasks).
CREATE TABLE agent_status (
    agent_id       text NOT NULL,
    worker_id      text NOT NULL,
    event_id       text NOT NULL,
    state          text NOT NULL CHECK (state IN ('IDLE', 'WORKING', 'ERROR')),
    open_tasks     integer NOT NULL,
    finished_tasks bigint NOT NULL,
    last_error     text,
    updated_at     timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, worker_id)
);

-- Channels are not events: a row per channel that has messages, maintained by the
-- message statement (its counter moves only when the message row is new).
CREATE TABLE channels (
    channel_id       text PRIMARY KEY,
    first_message_at timestamptz NOT NULL,
    last_message_at  timestamptz NOT NULL,
    message_count    bigint NOT NULL CHECK (message_count > 0),
    ingested_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    event_id     text PRIMARY KEY,
    channel_id   text NOT NULL,
    thread_id    text NOT NULL,
    reply_to     text,
    author_id    text NOT NULL,
    author_kind  text NOT NULL CHECK (author_kind IN ('HUMAN', 'AGENT', 'SYSTEM')),
    text         text NOT NULL,
    mentions     text[] NOT NULL DEFAULT '{}',
    thread_depth integer NOT NULL,
    created_at   timestamptz NOT NULL,
    task_id      text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_channel_created_idx ON messages (channel_id, created_at);
CREATE INDEX messages_author_created_idx ON messages (author_id, created_at);
CREATE INDEX messages_thread_idx ON messages (thread_id);

-- Votes: one row per VoteProposal; its VoteResult closes it. The two arrive on
-- different topics, in either order:
--   * result after proposal: the result statement updates the OPEN row from vote_results;
--   * result before proposal: the result is kept in vote_results, and the proposal's
--     INSERT ... SELECT ... LEFT JOIN vote_results creates the row already CLOSED.
-- Both take a transaction-scoped advisory lock on the vote id first, so that two sink
-- transactions writing the proposal and the result at the same time see each other.
CREATE TABLE votes (
    vote_id         text PRIMARY KEY,
    event_id        text NOT NULL,
    channel_id      text NOT NULL,
    proposer_id     text NOT NULL,
    vote_type       text NOT NULL
        CHECK (vote_type IN ('TOOL_USAGE', 'PROJECT_DECISION', 'CONFLICT_RESOLUTION', 'RESOURCE_ALLOCATION')),
    strategy        text NOT NULL
        CHECK (strategy IN ('SIMPLE_MAJORITY', 'QUALIFIED_MAJORITY', 'CONSENSUS', 'WEIGHTED')),
    title           text NOT NULL,
    description     text NOT NULL,
    options         text[] NOT NULL,
    eligible_voters text[] NOT NULL DEFAULT '{}',
    weights         jsonb NOT NULL DEFAULT '{}',
    quorum          double precision NOT NULL,
    deadline_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    tool_request_id text,
    status          text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED')),
    outcome         text CHECK (outcome IN ('PASSED', 'FAILED', 'NO_QUORUM', 'TIED', 'EXPIRED')),
    winning_option  text,
    tally           jsonb,
    ballots_counted integer,
    eligible_count  integer,
    reason          text,
    closed_at       timestamptz,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'CLOSED') = (outcome IS NOT NULL))
);
CREATE INDEX votes_open_deadline_idx ON votes (channel_id, deadline_at) WHERE status = 'OPEN';

-- Ballots: counted until a BallotRejected names them. The rejection may come before
-- or after the ballot (different topics): the ballot insert takes counted=false from
-- ballot_rejections when a rejection is already there, and the rejection updates
-- the ballot when it is. Both take an advisory lock on the ballot id (as for votes).
CREATE TABLE ballots (
    event_id         text PRIMARY KEY,
    vote_id          text NOT NULL,
    channel_id       text NOT NULL,
    voter_id         text NOT NULL,
    choice           text NOT NULL,
    rationale        text NOT NULL,
    cast_at          timestamptz NOT NULL,
    counted          boolean NOT NULL DEFAULT true,
    rejection_reason text
        CHECK (rejection_reason IN ('DUPLICATE', 'LATE', 'INELIGIBLE', 'UNKNOWN_VOTE', 'INVALID_CHOICE')),
    rejection_detail text,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (counted = (rejection_reason IS NULL))
);
CREATE INDEX ballots_vote_idx ON ballots (vote_id);

-- Every BallotRejected, whether or not its ballot is stored. A ballot is rejected once
-- (the rejection id is a UUIDv5 of the ballot id), hence the unique ballot_event_id.
CREATE TABLE ballot_rejections (
    event_id        text PRIMARY KEY,
    vote_id         text NOT NULL,
    voter_id        text NOT NULL,
    ballot_event_id text NOT NULL UNIQUE,
    reason          text NOT NULL
        CHECK (reason IN ('DUPLICATE', 'LATE', 'INELIGIBLE', 'UNKNOWN_VOTE', 'INVALID_CHOICE')),
    detail          text NOT NULL,
    rejected_at     timestamptz NOT NULL,
    channel_id      text,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ballot_rejections_vote_idx ON ballot_rejections (vote_id);

-- One result per vote (the result id is a UUIDv5 of the vote id).
CREATE TABLE vote_results (
    event_id        text PRIMARY KEY,
    vote_id         text NOT NULL UNIQUE,
    channel_id      text NOT NULL,
    vote_type       text NOT NULL
        CHECK (vote_type IN ('TOOL_USAGE', 'PROJECT_DECISION', 'CONFLICT_RESOLUTION', 'RESOURCE_ALLOCATION')),
    strategy        text NOT NULL
        CHECK (strategy IN ('SIMPLE_MAJORITY', 'QUALIFIED_MAJORITY', 'CONSENSUS', 'WEIGHTED')),
    outcome         text NOT NULL
        CHECK (outcome IN ('PASSED', 'FAILED', 'NO_QUORUM', 'TIED', 'EXPIRED')),
    winning_option  text,
    tally           jsonb NOT NULL DEFAULT '{}',
    ballots_counted integer NOT NULL,
    eligible_count  integer NOT NULL,
    reason          text NOT NULL,
    closed_at       timestamptz NOT NULL,
    tool_request_id text,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);

-- ToolRequests arrive on agora.tool.requests, agora.votes and agora.tool.approved with
-- the same event id: one row.
CREATE TABLE tool_requests (
    event_id          text PRIMARY KEY,
    channel_id        text NOT NULL,
    agent_id          text NOT NULL,
    tool              text NOT NULL,
    arguments         jsonb NOT NULL,  -- arguments_json parsed; a JSON string when it was not JSON
    reason            text NOT NULL,
    source_message_id text,
    requested_at      timestamptz NOT NULL,
    ingested_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tool_requests_agent_requested_idx ON tool_requests (agent_id, requested_at);

CREATE TABLE tool_runs (
    event_id    text PRIMARY KEY,
    request_id  text NOT NULL UNIQUE,
    channel_id  text NOT NULL,
    agent_id    text NOT NULL,
    tool        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('OK', 'DENIED', 'REJECTED', 'FAILED', 'TIMEOUT')),
    output      text NOT NULL,
    error       text,
    artifacts   text[] NOT NULL DEFAULT '{}',
    vote_id     text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL,
    duration_ms bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tool_runs_tool_status_idx ON tool_runs (tool, status);
CREATE INDEX tool_runs_agent_finished_idx ON tool_runs (agent_id, finished_at);

CREATE TABLE relevance_decisions (
    event_id       text PRIMARY KEY,
    message_id     text NOT NULL,
    channel_id     text NOT NULL,
    thread_id      text NOT NULL,
    thread_depth   integer NOT NULL,
    decided_at     timestamptz NOT NULL,
    selected       text[] NOT NULL DEFAULT '{}',
    skip_reason    text,
    config_version text NOT NULL,
    scores         jsonb NOT NULL DEFAULT '[]',  -- the AgentScore records, one object each
    ingested_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX relevance_decisions_channel_decided_idx ON relevance_decisions (channel_id, decided_at);
CREATE INDEX relevance_decisions_message_idx ON relevance_decisions (message_id);

CREATE TABLE inference_tasks (
    event_id            text PRIMARY KEY,
    decision_id         text NOT NULL,
    message_id          text NOT NULL,
    channel_id          text NOT NULL,
    thread_id           text NOT NULL,
    thread_depth        integer NOT NULL,
    agent_id            text NOT NULL,
    context_message_ids text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL,
    deadline_at         timestamptz,
    ingested_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inference_tasks_agent_created_idx ON inference_tasks (agent_id, created_at);

-- Misbehaviour, keyed by the id of the event that shows it: a ToolResult with status
-- DENIED ('tool_denied') and a BallotRejected ('ballot_rejected'). agent_id is the
-- requesting agent or the voter (a voter may be a person; join agents to keep agents).
CREATE TABLE infractions (
    event_id    text PRIMARY KEY,
    agent_id    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('tool_denied', 'ballot_rejected')),
    detail      text NOT NULL,
    occurred_at timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX infractions_agent_occurred_idx ON infractions (agent_id, occurred_at);

-- Operational events. source is the component that raised it: a DeadLetter's stage
-- (the consumer that failed), 'votes' (the votes worker's timer) for a VoteDeadline.
-- A dead letter's raw key, value and header values are base64 text in detail.
CREATE TABLE system_events (
    event_id    text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('dead_letter', 'vote_deadline')),
    source      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX system_events_kind_occurred_idx ON system_events (kind, occurred_at);
