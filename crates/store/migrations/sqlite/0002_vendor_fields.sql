-- Devices of other vendors than innovaphone (Snom, Yealink, ...): keyed by their normalised
-- MAC in `sn`, with the vendor, the model and the time of first contact.
ALTER TABLE devices ADD COLUMN vendor TEXT;
ALTER TABLE devices ADD COLUMN model TEXT;
ALTER TABLE devices ADD COLUMN first_seen INTEGER;
