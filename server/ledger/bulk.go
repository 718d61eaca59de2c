package ledger

import (
	"strconv"
	"strings"
)

// The set-based statements of a batch: one statement for many rows, in the
// same SQL on SQLite and PostgreSQL.
//
//   - INSERT … VALUES (…), (…) … ON CONFLICT DO NOTHING RETURNING key
//   - SELECT … WHERE key IN (VALUES (…), (…))
//   - WITH v (cols) AS (VALUES (…), (…)) UPDATE t SET … FROM v WHERE …
//
// On PostgreSQL the parameters of a VALUES list carry an explicit CAST (it
// cannot infer their types there); SQLite gets bare anonymous "?"
// parameters (its CAST would give BYTEA numeric affinity), so a bulk
// statement takes all its parameters from its bulk.

// maxBulkParams bounds the parameters of one statement: SQLite allows 32,766
// and PostgreSQL 65,535; a batch larger than this is split into several
// statements.
const maxBulkParams = 30000

// sqlType is the SQL type of a bulk column, for its CAST.
type sqlType string

const (
	tBigint sqlType = "BIGINT"
	tText   sqlType = "TEXT"
	tBytes  sqlType = "BYTEA"
	tBool   sqlType = "BOOLEAN"
)

// bulk builds one multi-row statement: rows of len(types) parameters each.
type bulk struct {
	types []sqlType
	args  []any
	rows  int
}

func newBulk(types ...sqlType) *bulk { return &bulk{types: types} }

// add appends one row; len(vals) must be len(types).
func (b *bulk) add(vals ...any) {
	if len(vals) != len(b.types) {
		panic("ledger: bulk row of the wrong width")
	}
	b.args = append(b.args, vals...)
	b.rows++
}

// values returns "(CAST($1 AS T1), …), (…)" for the rows (without the
// casts unless typed), numbering the parameters from first (1-based).
func (b *bulk) values(first int, typed bool) string {
	var sb strings.Builder
	n := first
	for r := range b.rows {
		if r > 0 {
			sb.WriteString(", ")
		}
		sb.WriteByte('(')
		for c, t := range b.types {
			if c > 0 {
				sb.WriteString(", ")
			}
			if typed {
				sb.WriteString("CAST($")
				sb.WriteString(strconv.Itoa(n))
				sb.WriteString(" AS ")
				sb.WriteString(string(t))
				sb.WriteByte(')')
			} else {
				// Anonymous: SQLite finds a named parameter's name by
				// walking a list, which makes binding thousands of
				// "$n" quadratic.
				sb.WriteByte('?')
			}
			n++
		}
		sb.WriteByte(')')
	}
	return sb.String()
}

// chunks splits the rows into bulks of at most maxBulkParams parameters.
func (b *bulk) chunks() []*bulk {
	per := max(1, maxBulkParams/len(b.types))
	if b.rows <= per {
		return []*bulk{b}
	}
	var out []*bulk
	w := len(b.types)
	for start := 0; start < b.rows; start += per {
		end := min(start+per, b.rows)
		out = append(out, &bulk{types: b.types, args: b.args[start*w : end*w], rows: end - start})
	}
	return out
}

// int64s makes a single-column bulk of ids.
func int64s(ids []uint64) *bulk {
	b := newBulk(tBigint)
	for _, id := range ids {
		b.add(int64(id))
	}
	return b
}

// texts makes a single-column bulk of strings.
func texts(vals []string) *bulk {
	b := newBulk(tText)
	for _, v := range vals {
		b.add(v)
	}
	return b
}
