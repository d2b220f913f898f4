-- Incidents by severity (the highest their messages suggested): how many opened, how
-- fast they were acknowledged and resolved.
-- param: hours UInt32 = 168
SELECT m.severity AS severity,
       count() AS incidents,
       countIf(a.seconds IS NOT NULL) AS acknowledged,
       countIf(r.seconds IS NOT NULL) AS resolved,
       round(avg(a.seconds), 1) AS mean_s_to_acknowledge,
       round(quantile(0.9)(a.seconds), 1) AS p90_s_to_acknowledge,
       round(avg(r.seconds), 1) AS mean_s_to_resolve,
       round(quantile(0.9)(r.seconds), 1) AS p90_s_to_resolve
FROM (SELECT incident_id, min(severity) AS severity FROM incident_messages FINAL
      GROUP BY incident_id
      HAVING min(detected_at) >= now64(3) - toIntervalHour({hours:UInt32})) AS m
LEFT JOIN (SELECT incident_id, min(seconds_open) AS seconds FROM incident_changes FINAL
           WHERE change IN ('ACKNOWLEDGED', 'RESOLVED') GROUP BY incident_id) AS a
       ON a.incident_id = m.incident_id
LEFT JOIN (SELECT incident_id, min(seconds_open) AS seconds FROM incident_changes FINAL
           WHERE change = 'RESOLVED' GROUP BY incident_id) AS r
       ON r.incident_id = m.incident_id
GROUP BY severity
ORDER BY severity
SETTINGS join_use_nulls = 1
