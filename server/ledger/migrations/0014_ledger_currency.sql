-- farego ledger schema, version 14: the ledger's own settings, kept in the
-- ledger so that every program and instance that opens it agrees. The first
-- is its currency: every account and every fare table is in it (a fare
-- table in another currency charged its riders nothing: currency_mismatch).
-- Open fills it in, from the latest fare table or the accounts of a ledger
-- from before, else from the currency it is given.
CREATE TABLE ledger_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
