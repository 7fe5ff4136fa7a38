-- Device messages move into one column of `devices` (a JSON array of [time, text] pairs, in
-- log order): a poll rewrote up to 200 message rows per device; now it writes one value.
ALTER TABLE devices ADD COLUMN msgs TEXT NOT NULL DEFAULT '[]';

UPDATE devices SET msgs = COALESCE(
    (SELECT json_group_array(json_array(m.time, m.msg))
       FROM (SELECT time, msg FROM device_messages WHERE sn = devices.sn ORDER BY id) AS m),
    '[]');

DROP TABLE device_messages;
