-- Starling storage schema, version 1 (PostgreSQL). The four shapes of the Storage trait.
-- Text columns use COLLATE "C" so that ORDER BY is UTF-8 byte order, as on SQLite, whatever
-- the database's locale. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE accounts (
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
);

-- One SCRAM record per hash; never a password.
CREATE TABLE credentials (
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    mechanism  TEXT COLLATE "C" NOT NULL,
    salt       BYTEA  NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key BYTEA  NOT NULL,
    server_key BYTEA  NOT NULL,
    PRIMARY KEY (domain, username, mechanism),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

-- kv, maps and archives need no account: rooms and hosts have them too.
CREATE TABLE kv (
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    store      TEXT COLLATE "C" NOT NULL,
    value      BYTEA  NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username, store)
);

CREATE TABLE map (
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    store      TEXT COLLATE "C" NOT NULL,
    item_key   TEXT COLLATE "C" NOT NULL,
    value      BYTEA  NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username, store, item_key)
);

-- seq is the insertion order that breaks ties between equal when_ms.
CREATE TABLE archive (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    store    TEXT COLLATE "C" NOT NULL,
    item_id  TEXT COLLATE "C" NOT NULL,
    when_ms  BIGINT NOT NULL,
    with_jid TEXT COLLATE "C" NOT NULL,
    payload  BYTEA  NOT NULL,
    UNIQUE (domain, username, store, item_id)
);
CREATE INDEX archive_by_time ON archive (domain, username, store, when_ms, seq);
CREATE INDEX archive_by_with ON archive (domain, username, store, with_jid, when_ms, seq);
