-- agora.incidents: the messages that opened or joined an incident, and what people did
-- about it. Time to acknowledge and to resolve are incident_changes.seconds_open of
-- the ACKNOWLEDGED and RESOLVED rows (analytics query incident_response).
CREATE TABLE IF NOT EXISTS incident_messages (
    event_id       String,
    incident_id    String,
    opened         Bool,
    channel_id     LowCardinality(String),
    message_id     String,
    author_id      LowCardinality(String),
    text           String,
    severity       LowCardinality(String),  -- SEV1, SEV2, SEV3, UNKNOWN
    service        Nullable(String),
    score          Float64,
    evidence       Array(Tuple(signal String, value Float64, detail String)),
    message_at     DateTime64(3, 'UTC'),
    detected_at    DateTime64(3, 'UTC'),
    config_version LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(detected_at)
ORDER BY (channel_id, detected_at, event_id)
TTL toDateTime(detected_at) + INTERVAL 180 DAY;

CREATE TABLE IF NOT EXISTS incident_changes (
    event_id     String,
    incident_id  String,
    channel_id   LowCardinality(String),
    change       LowCardinality(String),  -- ACKNOWLEDGED, RESOLVED, UNKNOWN
    actor_id     LowCardinality(String),
    note         Nullable(String),
    severity     LowCardinality(String),
    opened_at    DateTime64(3, 'UTC'),
    changed_at   DateTime64(3, 'UTC'),
    seconds_open Float64,                 -- changed_at - opened_at
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(changed_at)
ORDER BY (channel_id, changed_at, event_id)
TTL toDateTime(changed_at) + INTERVAL 180 DAY;
