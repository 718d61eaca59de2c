-- farego ledger schema, version 13: a reduced fare (child, senior,
-- student) is money, and the rider who asks for it is not believed: an
-- account's profile is pending until the operator or the payment provider
-- confirms it, and its credentials carry the adult profile meanwhile.
-- Accounts that hold a reduced profile from before are pending too: they
-- were never checked.
ALTER TABLE accounts ADD COLUMN profile_pending BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE accounts SET profile_pending = TRUE WHERE profile <> 0;
