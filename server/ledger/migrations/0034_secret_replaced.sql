-- farego ledger schema, version 34: when an account's secret was last
-- replaced (unix ns; 0: never, or before this version). A pass a restore
-- lost (issued between the backup and the restore) is taken into the
-- ledger from its first tap; one issued before the secret was replaced is
-- deny-listed then, as the replacement denied the passes it found: a
-- rider who replaced the secret after a restore (a lost phone) left the
-- lost phone's pass paying, on buses and at shops, until it ran out.
-- (Not re-runnable: SQLite has no ADD COLUMN IF NOT EXISTS.)
ALTER TABLE accounts ADD COLUMN secret_replaced_ns BIGINT NOT NULL DEFAULT 0;
