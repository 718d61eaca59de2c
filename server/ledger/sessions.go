package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ConsoleSession is a sign-in session of the operator's console. The
// browser holds a random secret; the ledger keeps only its SHA-256 (IDHash),
// so every settlement instance sharing the ledger knows the session and
// ending it ends it everywhere.
type ConsoleSession struct {
	IDHash  []byte // SHA-256 of the browser's secret (32 bytes)
	TokenID string // the API token signed in with ("init": the operator token file)
	Role    string // the token's role (operator or auditor)
	Created time.Time
	Expires time.Time
	Seen    time.Time // last use, to within the caller's granularity
	Ended   time.Time // zero while the session is live
}

// MaxSessionsPerToken bounds the live console sessions of one token: a new
// one ends the oldest beyond it.
const MaxSessionsPerToken = 20

// CreateSession stores a new console session, created (and last used) at
// cs.Created (zero: now) by the caller's clock. It ends the token's oldest
// live sessions beyond MaxSessionsPerToken and deletes sessions that
// expired or ended more than a day ago.
func (s *Store) CreateSession(ctx context.Context, cs ConsoleSession) error {
	if len(cs.IDHash) != 32 {
		return invalid("session id hash is %d bytes, want 32", len(cs.IDHash))
	}
	if err := checkText("token id", cs.TokenID, maxName, true); err != nil {
		return invalid("%v", err)
	}
	if !ValidRole(cs.Role) {
		return invalid("role %q", cs.Role)
	}
	return s.write(ctx, "create console session", func(t *txn) error {
		created := t.now
		if !cs.Created.IsZero() {
			created = cs.Created.UnixNano()
		}
		if cs.Expires.UnixNano() <= created {
			return invalid("session expires at %v, before it starts", cs.Expires)
		}
		dayAgo := t.now - int64(24*time.Hour)
		if _, err := t.exec("drop old sessions", `DELETE FROM console_sessions WHERE expires_ns < $1
			OR (ended_ns <> 0 AND ended_ns < $1)`, dayAgo); err != nil {
			return err
		}
		if _, err := t.exec("end surplus sessions", `UPDATE console_sessions SET ended_ns = $1
			WHERE token_id = $2 AND ended_ns = 0 AND expires_ns > $1 AND id_hash NOT IN (
				SELECT id_hash FROM console_sessions WHERE token_id = $2 AND ended_ns = 0 AND expires_ns > $1
				ORDER BY created_ns DESC LIMIT $3)`, t.now, cs.TokenID, MaxSessionsPerToken-1); err != nil {
			return err
		}
		_, err := t.exec("create session", `INSERT INTO console_sessions (id_hash, token_id, role, created_ns, expires_ns, seen_ns)
			VALUES ($1, $2, $3, $4, $5, $4)`, cs.IDHash, cs.TokenID, cs.Role, created, cs.Expires.UnixNano())
		return err
	})
}

// Session returns a console session by its id hash (ended and expired
// ones too: the caller checks), or ErrNotFound.
func (s *Store) Session(ctx context.Context, idHash []byte) (ConsoleSession, error) {
	cs := ConsoleSession{IDHash: idHash}
	var created, expires, seen, ended int64
	err := s.db.QueryRowContext(ctx, `SELECT token_id, role, created_ns, expires_ns, seen_ns, ended_ns
		FROM console_sessions WHERE id_hash = $1`, idHash).Scan(&cs.TokenID, &cs.Role, &created, &expires, &seen, &ended)
	if errors.Is(err, sql.ErrNoRows) {
		return cs, fmt.Errorf("%w: session", ErrNotFound)
	}
	if err != nil {
		return cs, fmt.Errorf("ledger: read session: %w", err)
	}
	cs.Created, cs.Expires, cs.Seen, cs.Ended = fromNS(created), fromNS(expires), fromNS(seen), fromNS(ended)
	return cs, nil
}

// TouchSession records that a live session was used at a time (the
// caller's clock, which judges its idle timeout).
func (s *Store) TouchSession(ctx context.Context, idHash []byte, at time.Time) error {
	return s.write(ctx, "touch console session", func(t *txn) error {
		_, err := t.exec("touch session", `UPDATE console_sessions SET seen_ns = $1 WHERE id_hash = $2 AND ended_ns = 0`,
			at.UnixNano(), idHash)
		return err
	})
}

// EndSessionsOf ends every console session signed in with token id (the
// operator token file's, "init", when it is replaced: its sessions are
// "init" and "init:" followed by the token's fingerprint) and returns how
// many it ended.
func (s *Store) EndSessionsOf(ctx context.Context, id string) (int64, error) {
	var n int64
	err := s.write(ctx, "end console sessions", func(t *txn) error {
		var err error
		n, err = t.execCount("end sessions", `UPDATE console_sessions SET ended_ns = $1 WHERE (token_id = $2 OR substr(token_id, 1, $4) = $3) AND ended_ns = 0`,
			t.now, id, id+":", int64(len(id)+1))
		return err
	})
	return n, err
}

// EndSession ends a console session (signing out). Ending it again is a
// no-op.
func (s *Store) EndSession(ctx context.Context, idHash []byte) error {
	return s.write(ctx, "end console session", func(t *txn) error {
		_, err := t.exec("end session", `UPDATE console_sessions SET ended_ns = $1 WHERE id_hash = $2 AND ended_ns = 0`,
			t.now, idHash)
		return err
	})
}
