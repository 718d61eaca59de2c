-- farego ledger schema, version 24: online payments the ledger refused,
-- a payment code. A refusal (over the rider's limit, or more than the
-- balance and credit line cover) wrote nothing and left the code usable,
-- so a shop's scanner shown one code could try it without end: its two
-- answers read the rider's limit exactly and a falling amount then took
-- nearly all the balance (an attack review). A code refused
-- MaxCodeRefusals times pays no more online (code_used); its tap on a bus,
-- within its life, still pays. One row a refused code, written under the
-- account's lock, in the transaction that refused it; an account keeps
-- its MaxRefusedCodes latest (only the rider, who holds the key, can make
-- more of its codes: the table is bounded by the accounts).
CREATE TABLE code_refusals (
    code_key   BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL,
    refusals   BIGINT NOT NULL,
    updated_ns BIGINT NOT NULL
);
CREATE INDEX code_refusals_account ON code_refusals (account_id, updated_ns);
