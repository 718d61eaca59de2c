-- farego ledger schema, version 18: the issuer keyring, shared by the
-- settlement instances. Every instance keeps a copy in its key directory
-- (keyring.json); the ledger holds each version once (the first instance
-- to store a version wins a rotation race) and the instances take the
-- newest from here, so a rotation through any of them reaches all.
-- Append-only (0019). Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS issuer_keyrings (
    version    BIGINT PRIMARY KEY CHECK (version > 0),
    keyring    TEXT NOT NULL,
    created_ns BIGINT NOT NULL
);
