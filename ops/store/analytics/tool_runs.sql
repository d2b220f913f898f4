-- Tool requests by tool and status, with run times.
-- param: hours UInt32 = 24
SELECT tool,
       status,
       count() AS requests,
       round(avg(duration_ms)) AS mean_ms,
       quantile(0.95)(duration_ms) AS p95_ms
FROM tool_results FINAL
WHERE finished_at >= now64(3) - toIntervalHour({hours:UInt32})
GROUP BY tool, status
ORDER BY tool, status
