-- Generated tokens per agent (the responder records them on each reply).
-- param: hours UInt32 = 24
SELECT author_id AS agent,
       count() AS replies,
       sum(toUInt64OrZero(metadata['prompt_tokens'])) AS prompt_tokens,
       sum(toUInt64OrZero(metadata['completion_tokens'])) AS completion_tokens
FROM chat_messages FINAL
WHERE author_kind = 'AGENT'
  AND created_at >= now64(3) - toIntervalHour({hours:UInt32})
GROUP BY agent
ORDER BY completion_tokens DESC, agent
