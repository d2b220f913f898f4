-- Agent response latency per agent: seconds from the posted message to the first streamed
-- token of the reply (first_token_*), and from the inference task to the whole reply (p50_s, p95_s).
-- param: hours UInt32 = 24
-- param: agent String = ""
SELECT t.agent_id AS agent,
       count() AS replies,
       round(quantile(0.5)(toUInt64OrNull(m.metadata['first_token_ms'])) / 1000, 3) AS first_token_p50_s,
       round(quantile(0.95)(toUInt64OrNull(m.metadata['first_token_ms'])) / 1000, 3) AS first_token_p95_s,
       round(quantile(0.5)(dateDiff('millisecond', t.created_at, m.created_at)) / 1000, 3) AS p50_s,
       round(quantile(0.95)(dateDiff('millisecond', t.created_at, m.created_at)) / 1000, 3) AS p95_s
FROM chat_messages AS m FINAL
INNER JOIN inference_tasks AS t FINAL ON m.task_id = t.event_id
WHERE m.created_at >= now64(3) - toIntervalHour({hours:UInt32})
  AND ({agent:String} = '' OR t.agent_id = {agent:String})
GROUP BY agent
ORDER BY agent
