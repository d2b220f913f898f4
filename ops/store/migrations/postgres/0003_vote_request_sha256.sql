-- VoteResult v2: the hash of the tool request a TOOL_USAGE vote approved.
ALTER TABLE vote_results ADD COLUMN request_sha256 text;
