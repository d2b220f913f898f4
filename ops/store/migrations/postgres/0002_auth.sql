-- Gateway authentication state: refresh tokens (kept hashed) and revoked access tokens.

-- One row per refresh token ever issued. A family is the chain of tokens rotated from
-- one issue: redeeming a token spends it and issues the next; redeeming a spent one
-- (a stolen copy used twice) revokes the whole family.
CREATE TABLE auth_refresh_tokens (
    token_sha256 text PRIMARY KEY,
    family_id    uuid NOT NULL,
    subject      text NOT NULL,
    roles        jsonb NOT NULL,
    admin        boolean NOT NULL DEFAULT false,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    spent_at     timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX auth_refresh_tokens_family_idx ON auth_refresh_tokens (family_id);

-- Access tokens refused before their expiry (the jti deny-list); rows past expires_at
-- can go, since the token is refused by then anyway.
CREATE TABLE auth_revoked_tokens (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL DEFAULT ''
);
CREATE INDEX auth_revoked_tokens_expires_idx ON auth_revoked_tokens (expires_at);
