-- The index on `seen` goes: every poll moves a device's entry in it (a delete and an insert
-- per state write, a third of what writing a steady poll costs SQLite), while the readers
-- it served are rare and run in the background: the hourly expiry and the catch-up after
-- another process's write both scan the table instead. Lists and filters use the server's
-- in-memory index. (PostgreSQL keeps it: replicas read what changed since a time there.)
DROP INDEX IF EXISTS devices_seen;
