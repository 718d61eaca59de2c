-- farego ledger schema, version 32: an account made anonymously (the
-- wallet's sign-up, POST /v1/accounts without a token) says so, and those
-- never issued a credential are found without a scan, oldest first, to be
-- forgotten a while after if nothing else was done with them either (no
-- posting, no credit line, never below it: Options.ForgetUnusedAccounts):
-- anyone may make 600 a minute. The index's condition names no column a
-- tap's settlement changes (an account's balance and postings), so that
-- PostgreSQL still updates those in place (HOT). The accounts made before
-- are not marked: never forgotten.
-- (Not re-runnable: SQLite has no ADD COLUMN IF NOT EXISTS.)
ALTER TABLE accounts ADD COLUMN anonymous BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX accounts_unused ON accounts (created_ns, id) WHERE anonymous AND last_serial = 0;
