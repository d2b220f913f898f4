-- Incidents, from agora.incidents (ops/store/postgres_rows.py). The sink writes what
-- the topic says: each message that opened or joined an incident (incident_messages),
-- each change people made (incident_changes), and the incident's current state.
-- The gateway's IncidentService changes the state first, with one conditional UPDATE
-- (two people resolving at once: one succeeds, the other is told), then publishes the
-- change; the sink applying it again changes nothing, and a database rebuilt from the
-- topic has the same state.
CREATE TABLE incidents (
    incident_id       text PRIMARY KEY,
    channel_id        text NOT NULL,
    title             text NOT NULL,
    severity          text NOT NULL CHECK (severity IN ('SEV1', 'SEV2', 'SEV3', 'UNKNOWN')),
    service           text,
    status            text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'acknowledged', 'resolved')),
    opened_by         text NOT NULL,
    opened_message_id text NOT NULL,
    opened_at         timestamptz NOT NULL,
    messages          integer NOT NULL DEFAULT 1,
    acknowledged_at   timestamptz,
    acknowledged_by   text,
    resolved_at       timestamptz,
    resolved_by       text,
    resolution        text,
    updated_at        timestamptz NOT NULL,
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (status = 'open' OR acknowledged_at IS NOT NULL)
);
CREATE INDEX incidents_channel_opened_idx ON incidents (channel_id, opened_at);

CREATE TABLE incident_messages (
    event_id    text PRIMARY KEY,
    incident_id text NOT NULL,
    opened      boolean NOT NULL,
    channel_id  text NOT NULL,
    message_id  text NOT NULL,
    author_id   text NOT NULL,
    text        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('SEV1', 'SEV2', 'SEV3', 'UNKNOWN')),
    service     text,
    score       double precision NOT NULL,
    evidence    jsonb NOT NULL DEFAULT '[]',
    message_at  timestamptz NOT NULL,
    detected_at timestamptz NOT NULL,
    config_version text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_messages_incident_idx ON incident_messages (incident_id, message_at);

CREATE TABLE incident_changes (
    event_id    text PRIMARY KEY,
    incident_id text NOT NULL,
    channel_id  text NOT NULL,
    change      text NOT NULL CHECK (change IN ('ACKNOWLEDGED', 'RESOLVED', 'UNKNOWN')),
    actor_id    text NOT NULL,
    note        text,
    severity    text NOT NULL CHECK (severity IN ('SEV1', 'SEV2', 'SEV3', 'UNKNOWN')),
    opened_at   timestamptz NOT NULL,
    changed_at  timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_changes_incident_idx ON incident_changes (incident_id, changed_at);
