-- Who is on call for a channel, shift by shift, and where their alerts go: the notify
-- action (streams/tools/actions.py) posts in the shift's notify channel and mentions
-- the people on call now. Kept with `agora oncall add|list`.
CREATE TABLE oncall_rota (
    channel_id     text NOT NULL,
    person         text NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz,  -- null: until further notice
    notify_channel text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, person, starts_at),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);
