-- farego ledger schema, version 1.
--
-- One text for SQLite and PostgreSQL: only BIGINT, TEXT, BYTEA and BOOLEAN
-- columns (SQLite stores BYTEA as a blob and BOOLEAN as 0/1), "$n"
-- placeholders in the code, ON CONFLICT and RETURNING (SQLite 3.35+).
-- Times are unix nanoseconds in BIGINT columns named *_ns; amounts are
-- integers in the currency's minor units.

-- Counters hand out account and payment ids and hold the deny-list and
-- latest fare-table versions. They are updated in the transaction that uses
-- them, so an id is never handed out twice and the deny-list version moves
-- with the entries.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES
    ('account_id', 999), ('payment_id', 0), ('deny_version', 0), ('fare_version', 0);

-- Accounts. balance and postings cache the sum and the number of the
-- account's postings; CheckInvariants recomputes both.
CREATE TABLE accounts (
    id          BIGINT PRIMARY KEY,
    profile     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    currency    TEXT NOT NULL,
    balance     BIGINT NOT NULL DEFAULT 0,
    postings    BIGINT NOT NULL DEFAULT 0,
    last_serial BIGINT NOT NULL DEFAULT 0,
    created_ns  BIGINT NOT NULL
);

-- Credentials issued (one per token seed); the seed itself is never stored.
CREATE TABLE credentials (
    account_id       BIGINT NOT NULL REFERENCES accounts (id),
    serial           BIGINT NOT NULL,
    not_after_ns     BIGINT NOT NULL,
    rider_public_key BYTEA NOT NULL,
    issued_ns        BIGINT NOT NULL,
    PRIMARY KEY (account_id, serial)
);

-- Taps as the validators recorded them, one row per tap id ("device/seq").
-- Everything but charge, transfer, capped and rated_version is written once.
-- account_id has no foreign key: a tap of an unknown account is kept, flagged.
CREATE TABLE taps (
    tap_id        TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    epoch         TEXT NOT NULL,
    at_ns         BIGINT NOT NULL,
    account_id    BIGINT NOT NULL,
    serial        BIGINT NOT NULL,
    code_key      BYTEA NOT NULL,
    code_hash     TEXT NOT NULL,
    profile       BIGINT NOT NULL,
    base_fare     BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    fare_version  BIGINT NOT NULL,
    route         TEXT NOT NULL,
    vehicle       TEXT NOT NULL,
    record        BYTEA NOT NULL,
    service_day   TEXT NOT NULL,
    flag          TEXT NOT NULL DEFAULT '',
    charge        BIGINT NOT NULL DEFAULT 0 CHECK (charge >= 0),
    transfer      BOOLEAN NOT NULL DEFAULT FALSE,
    capped        BOOLEAN NOT NULL DEFAULT FALSE,
    rated_version BIGINT NOT NULL DEFAULT 0,
    committed_ns  BIGINT NOT NULL
);
CREATE INDEX taps_account_day ON taps (account_id, service_day);
CREATE INDEX taps_account_time ON taps (account_id, at_ns);

-- Online payments, idempotent on (merchant_id, order_id).
CREATE TABLE payments (
    id          BIGINT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    serial      BIGINT NOT NULL,
    code_key    BYTEA NOT NULL,
    code_hash   TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_ns  BIGINT NOT NULL,
    UNIQUE (merchant_id, order_id)
);
CREATE INDEX payments_account ON payments (account_id);

-- Every payment code that paid, by a tap or online: a code pays once.
CREATE TABLE code_uses (
    code_key   BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL,
    serial     BIGINT NOT NULL,
    tap_id     TEXT REFERENCES taps (tap_id),
    payment_id BIGINT REFERENCES payments (id),
    created_ns BIGINT NOT NULL,
    CHECK ((tap_id IS NULL) <> (payment_id IS NULL))
);

-- Top-ups, idempotent on their reference.
CREATE TABLE topups (
    reference  TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    created_ns BIGINT NOT NULL
);

-- Postings: the append-only money journal. amount is the effect on the
-- balance (top-up positive; fare and payment negative; a correction either
-- way). seq numbers one account's postings 1, 2, 3, …
CREATE TABLE postings (
    account_id   BIGINT NOT NULL REFERENCES accounts (id),
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('topup', 'fare', 'fare_correction', 'payment')),
    amount       BIGINT NOT NULL CHECK (amount <> 0),
    tap_id       TEXT REFERENCES taps (tap_id),
    payment_id   BIGINT REFERENCES payments (id),
    topup_ref    TEXT REFERENCES topups (reference),
    fare_version BIGINT NOT NULL DEFAULT 0,
    created_ns   BIGINT NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX postings_tap ON postings (tap_id);
CREATE INDEX postings_payment ON postings (payment_id);

-- The deny list. serial 0 denies the whole account.
CREATE TABLE deny_entries (
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    serial     BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    since_ns   BIGINT NOT NULL,
    PRIMARY KEY (account_id, serial, reason)
);

-- Validators: their public keys and last reported status.
CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    public_key       BYTEA NOT NULL,
    registered_ns    BIGINT NOT NULL,
    online           BOOLEAN NOT NULL DEFAULT FALSE,
    queue_depth      BIGINT NOT NULL DEFAULT 0,
    oldest_unsent_ns BIGINT NOT NULL DEFAULT 0,
    last_seen_ns     BIGINT NOT NULL DEFAULT 0,
    software         TEXT NOT NULL DEFAULT '',
    epoch            TEXT NOT NULL DEFAULT '',
    out_of_service   TEXT NOT NULL DEFAULT '',
    versions         TEXT NOT NULL DEFAULT '{}',
    status_ns        BIGINT NOT NULL DEFAULT 0,
    last_seq         BIGINT NOT NULL DEFAULT 0,
    synced_ns        BIGINT NOT NULL DEFAULT 0
);

-- Fare tables by version, as JSON (agent/fare's format).
CREATE TABLE fare_tables (
    version    BIGINT PRIMARY KEY,
    body       TEXT NOT NULL,
    created_ns BIGINT NOT NULL
);
