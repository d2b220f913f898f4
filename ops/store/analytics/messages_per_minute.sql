-- Messages per channel per minute, from the per-minute aggregate.
-- param: hours UInt32 = 1
-- param: channel String = ""
SELECT minute,
       channel_id AS channel,
       sum(messages) AS messages
FROM messages_per_minute
WHERE minute >= now() - toIntervalHour({hours:UInt32})
  AND ({channel:String} = '' OR channel_id = {channel:String})
GROUP BY minute, channel
ORDER BY minute, channel
