-- farego ledger schema, version 23: the devices whose records of a payment
-- code were counted as its reuses (comma-separated device ids; '' for none
-- or not known, a reuse counted before). A device's second record of a
-- code is that device's word alone, like the keeper's own device's (see
-- NoteSameDeviceReuse): a stolen validator shown a code that another
-- validator took sent it twice and had the rider's passes and account
-- deny-listed (an attack review). (Not re-runnable: SQLite has no ADD
-- COLUMN IF NOT EXISTS; the tests that make an older ledger drop it.)
ALTER TABLE code_uses ADD COLUMN reusers TEXT NOT NULL DEFAULT '';
