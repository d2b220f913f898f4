-- Agent response latency: seconds from the inference task to the agent's reply, per agent.
-- param: hours UInt32 = 24
-- param: agent String = ""
SELECT t.agent_id AS agent,
       count() AS replies,
       round(quantile(0.5)(dateDiff('millisecond', t.created_at, m.created_at)) / 1000, 3) AS p50_s,
       round(quantile(0.95)(dateDiff('millisecond', t.created_at, m.created_at)) / 1000, 3) AS p95_s
FROM chat_messages AS m FINAL
INNER JOIN inference_tasks AS t FINAL ON m.task_id = t.event_id
WHERE m.created_at >= now64(3) - toIntervalHour({hours:UInt32})
  AND ({agent:String} = '' OR t.agent_id = {agent:String})
GROUP BY agent
ORDER BY agent
