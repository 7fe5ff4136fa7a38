-- Operators of the web UI / REST API (issue 6): accounts, browser sessions, API tokens and the
-- audit log of operator actions. Secrets are never stored in clear: `hash` is an argon2 PHC
-- string (passwords) or the hex SHA-256 of a random token (sessions, API tokens).

CREATE TABLE admin_users (
    name    TEXT PRIMARY KEY NOT NULL,
    hash    TEXT NOT NULL,
    created INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE admin_sessions (
    id       TEXT PRIMARY KEY NOT NULL,
    user     TEXT NOT NULL REFERENCES admin_users (name) ON DELETE CASCADE,
    csrf     TEXT NOT NULL,
    created  INTEGER NOT NULL DEFAULT 0,
    expires  INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX admin_sessions_expires ON admin_sessions (expires);

CREATE TABLE admin_tokens (
    id      TEXT PRIMARY KEY NOT NULL,
    user    TEXT NOT NULL REFERENCES admin_users (name) ON DELETE CASCADE,
    label   TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE admin_audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   INTEGER NOT NULL DEFAULT 0,
    user   TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX admin_audit_time ON admin_audit (time);
