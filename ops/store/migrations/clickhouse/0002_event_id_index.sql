-- Bloom-filter skip indexes on each table's dedupe key: the sink asks, for every
-- batch, which of its event ids a table already holds (ops/store/clickhouse.py).
-- The key is not a prefix of ORDER BY, so without an index that lookup reads the
-- whole key column; with one it reads only the granules that may hold the ids.
-- IF NOT EXISTS: a half-applied file is finished by a rerun.
-- MATERIALIZE builds the index for rows written before this migration.
ALTER TABLE chat_messages ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE chat_messages MATERIALIZE INDEX event_id_bloom;
ALTER TABLE relevance_decisions ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE relevance_decisions MATERIALIZE INDEX event_id_bloom;
ALTER TABLE relevance_scores ADD INDEX IF NOT EXISTS event_id_bloom concat(event_id, '/', agent_id) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE relevance_scores MATERIALIZE INDEX event_id_bloom;
ALTER TABLE inference_tasks ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE inference_tasks MATERIALIZE INDEX event_id_bloom;
ALTER TABLE tool_requests ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE tool_requests MATERIALIZE INDEX event_id_bloom;
ALTER TABLE tool_results ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE tool_results MATERIALIZE INDEX event_id_bloom;
ALTER TABLE vote_proposals ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE vote_proposals MATERIALIZE INDEX event_id_bloom;
ALTER TABLE ballots ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE ballots MATERIALIZE INDEX event_id_bloom;
ALTER TABLE vote_results ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE vote_results MATERIALIZE INDEX event_id_bloom;
ALTER TABLE ballot_rejections ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE ballot_rejections MATERIALIZE INDEX event_id_bloom;
ALTER TABLE agent_profiles ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE agent_profiles MATERIALIZE INDEX event_id_bloom;
ALTER TABLE agent_status ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE agent_status MATERIALIZE INDEX event_id_bloom;
ALTER TABLE dead_letters ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE dead_letters MATERIALIZE INDEX event_id_bloom;
ALTER TABLE vote_deadlines ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE vote_deadlines MATERIALIZE INDEX event_id_bloom;
