-- ChatMessage v2: the knowledge-base passages an agent's reply was answered from.
ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS sources Array(Tuple(document_id String, chunk_id String, title String, heading String)) AFTER metadata;
