package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// The set-based statements of a batch: one statement for many rows. A bulk
// is a set of rows that a statement reads as a row source (t.rows):
//
//   - INSERT INTO t (cols) <rows> ON CONFLICT …
//   - SELECT … WHERE key IN (<rows>)
//   - WITH v (cols) AS (<rows>) UPDATE t SET … FROM v WHERE …
//
// The row source is a VALUES list with one anonymous "?" parameter per
// value on SQLite (SQLite finds a named parameter's name by walking a list,
// which makes binding thousands of "$n" quadratic), padded with NULL rows
// that it leaves out to a power of two of rows, so that a statement takes
// a dozen texts whatever the batch sizes and each is prepared once; and on
// PostgreSQL
// "SELECT * FROM unnest($1::T1[], $2::T2[], …)" with one array parameter
// per column: the statement text is the same whatever the number of rows,
// so pgx prepares it once per connection and a batch costs one round trip
// per statement, whatever its size.

// maxBulkParams bounds the parameters of one SQLite statement (SQLite
// allows 32,766): a larger bulk is split into several statements.
const maxBulkParams = 30000

// sqlType is the PostgreSQL type of a bulk column.
type sqlType string

const (
	tBigint sqlType = "BIGINT"
	tText   sqlType = "TEXT"
	tBytes  sqlType = "BYTEA"
	tBool   sqlType = "BOOLEAN"
)

// bulk is a set of rows of len(types) values each.
type bulk struct {
	types []sqlType
	vals  []any // row after row
	rows  int
}

func newBulk(types ...sqlType) *bulk { return &bulk{types: types} }

// add appends one row; len(vals) must be len(types).
func (b *bulk) add(vals ...any) {
	if len(vals) != len(b.types) {
		panic("ledger: bulk row of the wrong width")
	}
	b.vals = append(b.vals, vals...)
	b.rows++
}

// chunks splits the rows into bulks small enough for one SQLite statement
// (PostgreSQL takes any bulk whole: see rows).
func (b *bulk) chunks(pg bool) []*bulk {
	if b.rows == 0 {
		return nil
	}
	per := max(1, maxBulkParams/len(b.types))
	if pg || b.rows <= per {
		return []*bulk{b}
	}
	var out []*bulk
	w := len(b.types)
	for start := 0; start < b.rows; start += per {
		end := min(start+per, b.rows)
		out = append(out, &bulk{types: b.types, vals: b.vals[start*w : end*w], rows: end - start})
	}
	return out
}

// source returns the row source of the bulk and its arguments, parameters
// numbered from first (1-based; PostgreSQL only: SQLite's are anonymous).
func (b *bulk) source(first int, pg bool) (string, []any) {
	if !pg {
		// The rows are padded with rows of NULLs, which the row source
		// leaves out, to a size of a few (see padded): the statement's
		// text then takes a few forms whatever the batch sizes, and each
		// is parsed once (prepared), not once per transaction.
		n := b.padded()
		var sb strings.Builder
		sb.WriteString("SELECT * FROM (VALUES ")
		row := "(" + strings.Repeat("?, ", len(b.types)-1) + "?)"
		for r := range n {
			if r > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(row)
		}
		sb.WriteString(") WHERE column1 IS NOT NULL")
		args := b.vals
		if n > b.rows {
			args = make([]any, n*len(b.types))
			copy(args, b.vals)
		}
		return sb.String(), args
	}
	var sb strings.Builder
	sb.WriteString("SELECT * FROM unnest(")
	args := make([]any, len(b.types))
	w := len(b.types)
	for c, t := range b.types {
		if c > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("CAST($" + strconv.Itoa(first+c) + " AS " + string(t) + "[])")
		args[c] = column(b, c, w, t)
	}
	sb.WriteByte(')')
	return sb.String(), args
}

// padded returns the number of rows a SQLite row source of b has: the
// next power of two, within the rows one statement may have (see chunks).
// A bulk's first column is never NULL, so a padding row is told by it.
func (b *bulk) padded() int {
	n := 1
	for n < b.rows {
		n *= 2
	}
	return max(b.rows, min(n, maxBulkParams/len(b.types)))
}

// column gathers column c of the rows as a typed slice (a PostgreSQL
// array parameter).
func column(b *bulk, c, w int, t sqlType) any {
	switch t {
	case tBigint:
		out := make([]int64, b.rows)
		for r := range out {
			out[r] = asInt64(b.vals[r*w+c])
		}
		return out
	case tText:
		out := make([]string, b.rows)
		for r := range out {
			out[r] = b.vals[r*w+c].(string)
		}
		return out
	case tBytes:
		out := make([][]byte, b.rows)
		for r := range out {
			if v := b.vals[r*w+c]; v != nil {
				out[r] = v.([]byte)
			}
		}
		return out
	case tBool:
		out := make([]bool, b.rows)
		for r := range out {
			out[r] = b.vals[r*w+c].(bool)
		}
		return out
	}
	panic(fmt.Sprintf("ledger: bulk column type %s", t))
}

func asInt64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case uint64:
		return int64(x)
	}
	panic(fmt.Sprintf("ledger: bulk value %T is not an integer", v))
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

// matching returns a FROM item and a WHERE condition that select the rows
// of table (named alias in the query) whose key columns equal a row of b:
//
//	SQLite:     FROM table AS alias WHERE (alias.k1, …) IN (VALUES …)
//	PostgreSQL: FROM (SELECT * FROM unnest(…)) AS v (k1, …) CROSS JOIN LATERAL
//	                (SELECT * FROM table WHERE table.k1 = v.k1 AND … OFFSET 0) AS alias
//	            WHERE TRUE
//
// On PostgreSQL every row of b is one index lookup whatever the planner
// guesses: the lateral subquery cannot be flattened (OFFSET 0), so it
// cannot become a hash join over a scan of the whole table, which the
// planner picks when it underrates a table (a young ledger, a plan cached
// while the table was small, statistics behind by a minute) or overrates
// index lookups (its default random_page_cost on a ledger held in memory):
// such a scan cost a settlement batch 7 ms at 30,000 code uses, growing
// with the ledger. Parameters are numbered from $1.
func (t *txn) matching(b *bulk, table, alias string, keys ...string) (from, where string, args []any) {
	return matching(t.pg(), b, table, alias, keys...)
}

// matching is txn.matching for a read outside a write transaction, on
// PostgreSQL if pg.
func matching(pg bool, b *bulk, table, alias string, keys ...string) (from, where string, args []any) {
	return matchingAt(pg, b, 1, table, alias, keys...)
}

// matchingAt is matching with the parameters numbered from first
// (PostgreSQL).
func matchingAt(pg bool, b *bulk, first int, table, alias string, keys ...string) (from, where string, args []any) {
	src, args := b.source(first, pg)
	if !pg {
		cols := make([]string, len(keys))
		for i, k := range keys {
			cols[i] = alias + "." + k
		}
		return table + " AS " + alias, "(" + strings.Join(cols, ", ") + ") IN (" + src + ")", args
	}
	conds := make([]string, len(keys))
	for i, k := range keys {
		conds[i] = table + "." + k + " = v." + k
	}
	return "(" + src + ") AS v (" + strings.Join(keys, ", ") + ") CROSS JOIN LATERAL (SELECT * FROM " + table +
		" WHERE " + strings.Join(conds, " AND ") + " OFFSET 0) AS " + alias, "TRUE", args
}
