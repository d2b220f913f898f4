-- VoteResult v2: the hash of the tool request a TOOL_USAGE vote approved.
ALTER TABLE vote_results ADD COLUMN IF NOT EXISTS request_sha256 Nullable(String) AFTER tool_request_id;
