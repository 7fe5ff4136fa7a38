-- Messages another process (the CLI's `notify`) appends to a device next to a running server
-- with write-behind: kept here until a write of the device's state that contains them, so a
-- state the server still holds in memory cannot write over them.
CREATE TABLE device_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sn TEXT NOT NULL,
    time INTEGER NOT NULL,
    msg TEXT NOT NULL
);
CREATE INDEX device_notes_sn ON device_notes (sn, id);
