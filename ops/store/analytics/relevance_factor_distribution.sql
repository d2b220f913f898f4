-- Distribution of each relevance factor per agent: p10, median and p90.
-- param: hours UInt32 = 24
SELECT agent_id AS agent,
       factor,
       round(quantile(0.1)(value), 3) AS p10,
       round(quantile(0.5)(value), 3) AS p50,
       round(quantile(0.9)(value), 3) AS p90
FROM relevance_scores FINAL
ARRAY JOIN ['score', 'expertise', 'workload', 'social', 'timing', 'quality'] AS factor,
           [score, expertise, workload, social, timing, quality] AS value
WHERE decided_at >= now64(3) - toIntervalHour({hours:UInt32})
GROUP BY agent, factor
ORDER BY agent, factor
