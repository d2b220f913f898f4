-- Incident tickets, written by the ticket.* actions (streams/tools/actions.py) in the
-- worker, never by the sinks. A ticket is INC-<id>. Opening one is idempotent twice
-- over: on the request that opened it (a replayed request finds its ticket) and on the
-- incident (a second request for the same incident finds the first one's ticket).
CREATE TABLE tickets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  text NOT NULL UNIQUE,
    incident_id text UNIQUE,
    channel_id  text NOT NULL,
    title       text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('SEV1', 'SEV2', 'SEV3')),
    service     text,
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    assignee    text,
    message_ids text[] NOT NULL DEFAULT '{}',
    opened_by   text NOT NULL,
    resolution  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX tickets_channel_status_idx ON tickets (channel_id, status);
