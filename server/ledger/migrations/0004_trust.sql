-- farego ledger schema, version 4: the server rates every tap itself, a tap
-- is identified by its device, queue epoch and sequence number, accounts
-- have a credit line, and API tokens and device credentials live here.

-- Taps. base_fare is now the server's base fare (from its own fare table,
-- the route and the credential's profile); claimed_fare, currency and
-- fare_version keep what the validator claimed, for audit only.
-- rated_version is the server's fare table that rates the tap. notes lists
-- the audit findings of a charged tap (comma-separated, e.g. fare_mismatch).
-- postings counts the tap's postings (its first is kind fare). rider_key is
-- the rider public key of the code's credential.
ALTER TABLE taps ADD COLUMN claimed_fare BIGINT NOT NULL DEFAULT 0;
ALTER TABLE taps ADD COLUMN notes TEXT NOT NULL DEFAULT '';
ALTER TABLE taps ADD COLUMN postings BIGINT NOT NULL DEFAULT 0;
ALTER TABLE taps ADD COLUMN rider_key BYTEA;
UPDATE taps SET claimed_fare = base_fare;
UPDATE taps SET postings = (SELECT COUNT(*) FROM postings p WHERE p.tap_id = taps.tap_id);
-- (device_id, epoch, seq) is unique through tap_id, which is made of them.

-- Accounts. credit_line is how far below zero the balance may go before the
-- account is denied (the "charge first, deduct later" riders); neg_denied
-- mirrors the account's negative_balance deny entry on the row, so a
-- transaction that locks the row reads it without a second query.
ALTER TABLE accounts ADD COLUMN credit_line BIGINT NOT NULL DEFAULT 0 CHECK (credit_line >= 0);
ALTER TABLE accounts ADD COLUMN neg_denied BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE accounts SET neg_denied = TRUE WHERE EXISTS (
    SELECT 1 FROM deny_entries d WHERE d.account_id = accounts.id AND d.serial = 0 AND d.reason = 'negative_balance');

-- A deny entry may expire with the credential it names (code reuse): the
-- published list leaves it out after expires_ns (0: never expires).
ALTER TABLE deny_entries ADD COLUMN expires_ns BIGINT NOT NULL DEFAULT 0;

-- Code uses count the further uses of a code (duplicate_code taps).
ALTER TABLE code_uses ADD COLUMN reuses BIGINT NOT NULL DEFAULT 0;

-- Taps held aside because they cannot be checked with the server's current
-- state (a code signed by an issuer key the server's keyring lacks, for
-- example after a restore): re-checked when that state changes, charged
-- then, never lost.
CREATE TABLE held_taps (
    device_id   TEXT NOT NULL,
    epoch       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    record      BYTEA NOT NULL,
    received_ns BIGINT NOT NULL,
    PRIMARY KEY (device_id, epoch, seq)
);

-- API credentials with a role (operator, payments, merchant, auditor); the
-- token itself is never stored, only its SHA-256.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    merchant_id TEXT NOT NULL DEFAULT '',
    name        TEXT NOT NULL DEFAULT '',
    token_hash  BYTEA NOT NULL UNIQUE,
    created_ns  BIGINT NOT NULL,
    revoked_ns  BIGINT NOT NULL DEFAULT 0
);

-- Devices: the broker credential (random per registration, stored as a
-- PBKDF2 hash in Mosquitto's password-file format), the SHA-256 of the
-- registered client certificate, and when the device was revoked (0: not).
ALTER TABLE devices ADD COLUMN mqtt_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN cert_sha256 BYTEA;
ALTER TABLE devices ADD COLUMN revoked_ns BIGINT NOT NULL DEFAULT 0;
-- clock_offset_ns is the device clock minus the server's when its last
-- status arrived.
ALTER TABLE devices ADD COLUMN clock_offset_ns BIGINT NOT NULL DEFAULT 0;

-- The operators' audit trail: who changed what, when.
CREATE TABLE audit_log (
    id       BIGINT PRIMARY KEY,
    at_ns    BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('audit_id', 0);

-- Only payment postings have a payment: index those alone (every fare
-- posting paid for an index entry of NULL).
DROP INDEX postings_payment;
CREATE INDEX postings_payment ON postings (payment_id) WHERE payment_id IS NOT NULL;
