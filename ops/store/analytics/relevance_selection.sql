-- Relevance per agent: how often it was considered and selected, and its mean factors.
-- param: hours UInt32 = 24
-- param: channel String = ""
SELECT agent_id AS agent,
       count() AS considered,
       countIf(selected) AS times_selected,
       round(countIf(selected) / count(), 3) AS selection_rate,
       round(avg(score), 3) AS mean_score,
       round(avg(expertise), 3) AS mean_expertise,
       round(avg(workload), 3) AS mean_workload,
       round(avg(social), 3) AS mean_social,
       round(avg(timing), 3) AS mean_timing,
       round(avg(quality), 3) AS mean_quality
FROM relevance_scores FINAL
WHERE decided_at >= now64(3) - toIntervalHour({hours:UInt32})
  AND ({channel:String} = '' OR channel_id = {channel:String})
GROUP BY agent
ORDER BY selection_rate DESC, agent
