-- Satisfaction per agent: people's ratings of its replies (share positive, the seed's
-- satisfaction score) and the outcomes that went against it.
-- param: hours UInt32 = 168
SELECT agent_id,
       countIf(kind = 'RATING') AS ratings,
       countIf(kind = 'RATING' AND value > 0) AS positive,
       round(if(ratings > 0, positive / ratings, NULL), 3) AS satisfaction,
       countIf(kind = 'TOOL_FAILED') AS tools_failed,
       countIf(kind = 'PROPOSAL_LOST') AS proposals_lost,
       countIf(kind = 'BALLOT_LATE') AS ballots_late
FROM agent_feedback FINAL
WHERE created_at >= now64(3) - toIntervalHour({hours:UInt32})
GROUP BY agent_id
ORDER BY agent_id
