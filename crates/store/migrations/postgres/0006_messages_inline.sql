-- Device messages move into one column of `devices` (see migrations/sqlite/0006).
ALTER TABLE devices ADD COLUMN msgs TEXT NOT NULL DEFAULT '[]';

UPDATE devices SET msgs = COALESCE(
    (SELECT json_agg(json_build_array(m.time, m.msg) ORDER BY m.id)::text
       FROM device_messages m WHERE m.sn = devices.sn),
    '[]');

DROP TABLE device_messages;
