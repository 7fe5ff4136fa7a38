-- autoprov device state (everything the innovaphone reference keeps in status/<sn>.xml).
--
-- Times are INTEGER Unix epoch seconds, ids are TEXT. Child rows belong to one device and go
-- away with it (ON DELETE CASCADE; the store turns foreign keys on for every connection).
-- `pos` columns keep the order of the in-memory lists so that load -> save -> load is exact.
-- Plain SQL on purpose: a PostgreSQL twin of this file must stay easy to write.

CREATE TABLE devices (
    sn                 TEXT PRIMARY KEY NOT NULL,
    seen               INTEGER NOT NULL DEFAULT 0,
    phase              TEXT,
    nextphase          TEXT,
    skipnext           INTEGER,
    requested          TEXT,
    device_type        TEXT,
    classes            TEXT,
    ip                 TEXT,
    rp                 INTEGER NOT NULL DEFAULT 0,
    proxy              TEXT,
    realip             TEXT,
    hwid               TEXT,
    device_phase       TEXT,
    environments       TEXT,
    backup             INTEGER,
    certstat           TEXT,
    request_downloaded TEXT,
    fw_build           TEXT,
    fw_requested       TEXT,
    fw_requested_at    INTEGER,
    boot_build         TEXT,
    boot_requested_at  INTEGER
);

CREATE INDEX devices_seen ON devices (seen);

-- `var-<name>` upload stamps (mode=vardump).
CREATE TABLE device_vars (
    sn   TEXT NOT NULL REFERENCES devices (sn) ON DELETE CASCADE,
    name TEXT NOT NULL,
    time INTEGER NOT NULL DEFAULT 0,
    pos  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sn, name)
);

-- The per-device log; order is the id order (an empty msg is a ruler starting a request).
CREATE TABLE device_messages (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    sn   TEXT NOT NULL REFERENCES devices (sn) ON DELETE CASCADE,
    time INTEGER NOT NULL DEFAULT 0,
    msg  TEXT NOT NULL DEFAULT ''
);

CREATE INDEX device_messages_sn ON device_messages (sn, id);

-- Scripts delivered to the device, by file name.
CREATE TABLE device_scripts (
    sn        TEXT NOT NULL REFERENCES devices (sn) ON DELETE CASCADE,
    filename  TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    version   INTEGER NOT NULL DEFAULT 0,
    pos       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sn, filename)
);

-- Query results stored by mode=query (body is the XML text the device sent).
CREATE TABLE device_queries (
    sn   TEXT NOT NULL REFERENCES devices (sn) ON DELETE CASCADE,
    id   TEXT NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL DEFAULT '',
    pos  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sn, id)
);

-- Small store-wide values (e.g. the time of the last cleanup).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
