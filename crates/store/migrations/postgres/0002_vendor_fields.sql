-- Devices of other vendors (see migrations/sqlite/0002_vendor_fields.sql).
ALTER TABLE devices ADD COLUMN vendor TEXT;
ALTER TABLE devices ADD COLUMN model TEXT;
ALTER TABLE devices ADD COLUMN first_seen BIGINT;
