-- Memory on pgvector (docs/ARCHITECTURE.md, "Memory and knowledge"): every worker
-- shares these tables, nothing is opened per call. Vectors are the embedder's
-- L2-normalised 384 floats; HNSW indexes answer cosine distance (<=>).
CREATE EXTENSION IF NOT EXISTS vector;

-- What each agent knows about, embedded (relevance's expertise factor).
CREATE TABLE agent_expertise (
    agent_id   text PRIMARY KEY,
    text       text NOT NULL,
    embedding  vector(384) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Past chat messages with their embeddings, recalled per channel by the responder.
CREATE TABLE channel_memory (
    message_id text PRIMARY KEY,
    channel_id text NOT NULL,
    author_id  text NOT NULL,
    text       text NOT NULL,
    created_at timestamptz NOT NULL,
    embedding  vector(384) NOT NULL
);
CREATE INDEX channel_memory_channel ON channel_memory (channel_id, created_at);
CREATE INDEX channel_memory_embedding ON channel_memory USING hnsw (embedding vector_cosine_ops);

-- The knowledge base: documents added to a channel (channel_id) or to the whole
-- workspace (channel_id NULL). One row per document: its latest version, or its removal
-- (status 'removed', kept so that an older add arriving late does not revive it).
CREATE TABLE knowledge_documents (
    document_id    text PRIMARY KEY,
    channel_id     text,
    source         text NOT NULL,           -- the name it was added under (file name, URL)
    title          text NOT NULL,
    media_type     text NOT NULL,
    content_sha256 text NOT NULL,
    size_bytes     integer NOT NULL,
    status         text NOT NULL CHECK (status IN ('ingesting', 'active', 'failed', 'removed')),
    error          text,
    chunks         integer NOT NULL DEFAULT 0,
    chunks_embedded integer NOT NULL DEFAULT 0,
    added_by       text NOT NULL,
    event_id       text NOT NULL,           -- the event of the version shown
    changed_at     timestamptz NOT NULL,    -- event time of the last add or removal
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX knowledge_documents_channel ON knowledge_documents (channel_id);

-- The passages (chunks) of active documents: swapped whole, in one transaction, when a
-- document changes, so a search never sees half a version.
CREATE TABLE knowledge_base (
    chunk_id     text PRIMARY KEY,
    document_id  text NOT NULL REFERENCES knowledge_documents ON DELETE CASCADE,
    channel_id   text,
    title        text NOT NULL,
    heading      text NOT NULL,
    content      text NOT NULL,
    position     integer NOT NULL,
    content_hash text NOT NULL,
    source       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    embedding    vector(384) NOT NULL,
    search       tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title || ' ' || heading), 'A') ||
        setweight(to_tsvector('english', content), 'B')) STORED
);
CREATE INDEX knowledge_base_document ON knowledge_base (document_id, position);
CREATE INDEX knowledge_base_channel ON knowledge_base (channel_id);
CREATE INDEX knowledge_base_embedding ON knowledge_base USING hnsw (embedding vector_cosine_ops);
CREATE INDEX knowledge_base_search ON knowledge_base USING gin (search);

-- ChatMessage v2: the passages an agent's reply was answered from.
ALTER TABLE messages ADD COLUMN sources jsonb;
