-- Starling storage schema, version 1 (SQLite). The four shapes of the Storage trait.
-- Text columns compare as BINARY (byte order), the same order PostgreSQL's COLLATE "C" gives.
-- Timestamps are milliseconds since the Unix epoch.

CREATE TABLE accounts (
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, username)
);

-- One SCRAM record per hash; never a password.
CREATE TABLE credentials (
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    mechanism  TEXT    NOT NULL,
    salt       BLOB    NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB    NOT NULL,
    server_key BLOB    NOT NULL,
    PRIMARY KEY (domain, username, mechanism),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

-- kv, maps and archives need no account: rooms and hosts have them too.
CREATE TABLE kv (
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    store      TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, username, store)
);

CREATE TABLE map (
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    store      TEXT    NOT NULL,
    item_key   TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, username, store, item_key)
);

-- seq is the insertion order that breaks ties between equal when_ms.
CREATE TABLE archive (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    domain   TEXT    NOT NULL,
    username TEXT    NOT NULL,
    store    TEXT    NOT NULL,
    item_id  TEXT    NOT NULL,
    when_ms  INTEGER NOT NULL,
    with_jid TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    UNIQUE (domain, username, store, item_id)
);
CREATE INDEX archive_by_time ON archive (domain, username, store, when_ms, seq);
CREATE INDEX archive_by_with ON archive (domain, username, store, with_jid, when_ms, seq);
