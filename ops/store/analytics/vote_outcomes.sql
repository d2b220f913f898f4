-- Vote outcomes by type and strategy.
-- param: hours UInt32 = 168
SELECT vote_type,
       strategy,
       outcome,
       count() AS votes,
       round(avg(ballots_counted), 2) AS mean_ballots,
       round(avg(ballots_counted / greatest(eligible_count, 1)), 3) AS mean_turnout
FROM vote_results FINAL
WHERE closed_at >= now64(3) - toIntervalHour({hours:UInt32})
GROUP BY vote_type, strategy, outcome
ORDER BY vote_type, strategy, outcome
