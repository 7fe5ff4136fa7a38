-- The same table as on SQLite (see migrations/sqlite/0007_device_notes.sql). PostgreSQL
-- replicas hold a device's advisory lock from load to save, so nothing writes here yet; the
-- schemas stay alike.
CREATE TABLE device_notes (
    id BIGSERIAL PRIMARY KEY,
    sn TEXT NOT NULL,
    time BIGINT NOT NULL,
    msg TEXT NOT NULL
);
CREATE INDEX device_notes_sn ON device_notes (sn, id);
