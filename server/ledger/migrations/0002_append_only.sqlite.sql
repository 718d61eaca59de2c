-- Refuse UPDATE and DELETE on the journal tables (SQLite dialect; the
-- PostgreSQL file does the same with a trigger function).
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'ledger: postings are append-only'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'ledger: postings are append-only'); END;
CREATE TRIGGER topups_no_update BEFORE UPDATE ON topups
BEGIN SELECT RAISE(ABORT, 'ledger: topups are append-only'); END;
CREATE TRIGGER topups_no_delete BEFORE DELETE ON topups
BEGIN SELECT RAISE(ABORT, 'ledger: topups are append-only'); END;
CREATE TRIGGER payments_no_update BEFORE UPDATE ON payments
BEGIN SELECT RAISE(ABORT, 'ledger: payments are append-only'); END;
CREATE TRIGGER payments_no_delete BEFORE DELETE ON payments
BEGIN SELECT RAISE(ABORT, 'ledger: payments are append-only'); END;
CREATE TRIGGER code_uses_no_update BEFORE UPDATE ON code_uses
BEGIN SELECT RAISE(ABORT, 'ledger: code_uses are append-only'); END;
CREATE TRIGGER code_uses_no_delete BEFORE DELETE ON code_uses
BEGIN SELECT RAISE(ABORT, 'ledger: code_uses are append-only'); END;
CREATE TRIGGER taps_no_delete BEFORE DELETE ON taps
BEGIN SELECT RAISE(ABORT, 'ledger: taps are never deleted'); END;
