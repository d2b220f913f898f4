-- Relevance matches a message against each agent's expertise sentence and its
-- template's example messages, so vectors are kept per reference text, shared by every
-- agent that uses it, instead of one per agent. The old table was a cache of what the
-- embedder recomputes: dropping it loses nothing.
DROP TABLE agent_expertise;

CREATE TABLE text_vectors (
    text_id     uuid PRIMARY KEY,  -- schemas.ids.derived_id(text), as Qdrant keys it
    text        text NOT NULL,
    embedding   vector(384) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
