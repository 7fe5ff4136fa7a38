-- Firmware catalogue progress: what each device fetched and reported (autoprov-core's
-- firmware::FirmwareProgress / FirmwareFetch). The catalogue itself (images, sha256, targets)
-- lives in the site (firmware/catalog.toml, autoprov.toml), not here.
--
-- `device` is the device key (a MAC as 12 lower-case hex digits, else the id as given, e.g.
-- `ip:<peer address>`). No foreign key to `devices`: every vendor's devices are tracked here,
-- not only innovaphone's. Times are INTEGER Unix epoch seconds.

CREATE TABLE firmware_progress (
    device           TEXT PRIMARY KEY NOT NULL,
    vendor           TEXT NOT NULL DEFAULT '',
    model            TEXT NOT NULL DEFAULT '',
    -- JSON array of group names, as last reported with the version.
    groups           TEXT NOT NULL DEFAULT '[]',
    reported_version TEXT,
    reported_at      INTEGER,
    image_version    TEXT,
    image_sha256     TEXT,
    -- Downloads from byte 0 of image_sha256 since the reported version last changed.
    fetches          INTEGER NOT NULL DEFAULT 0,
    first_fetch_at   INTEGER,
    last_fetch_at    INTEGER,
    done_at          INTEGER,
    flagged_at       INTEGER
);

-- Every firmware download (range_start > 0 = a resume); the callers prune old rows per device.
CREATE TABLE firmware_fetches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device      TEXT NOT NULL,
    time        INTEGER NOT NULL DEFAULT 0,
    vendor      TEXT NOT NULL DEFAULT '',
    model       TEXT NOT NULL DEFAULT '',
    version     TEXT NOT NULL DEFAULT '',
    sha256      TEXT NOT NULL DEFAULT '',
    range_start INTEGER NOT NULL DEFAULT 0,
    peer        TEXT NOT NULL DEFAULT ''
);

CREATE INDEX firmware_fetches_device ON firmware_fetches (device, id);
