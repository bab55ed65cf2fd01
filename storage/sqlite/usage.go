package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"tollgate/metering"
)

// DB satisfies metering.BatchStore.
var _ metering.BatchStore = (*DB)(nil)

const insertUsage = `INSERT INTO usage(request_id, key_id, endpoint, model,
	prompt_tokens, completion_tokens, status, latency_us, cost_micros, created_at, surface, account_id)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT(request_id) DO NOTHING`

// InsertEvents stores events in one IMMEDIATE transaction. An event whose
// request id is already stored, earlier in the table or earlier in events,
// is skipped; inserted[i] reports whether events[i] was newly stored. On
// error nothing is stored.
//
// claim, unless nil, is called once BEGIN IMMEDIATE has succeeded, that is
// once this connection holds the database's write lock, and before any event
// is read: what is stored is events as claim left them, and from the claim on
// only the inserts and the commit remain. If the lock is not obtained, or ctx
// ended while waiting for it, claim is not called. See metering.BatchStore.
//
// The wait for the lock is bounded by the busy timeout (10s), not by ctx:
// SQLite's busy wait does not notice ctx ending.
func (db *DB) InsertEvents(ctx context.Context, events []metering.Event, claim func()) ([]bool, error) {
	inserted := make([]bool, len(events))
	if len(events) == 0 {
		if claim != nil {
			claim()
		}
		return inserted, nil
	}
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		// The busy wait in BEGIN does not heed ctx: if ctx ended meanwhile,
		// the transaction is being rolled back, so claim nothing for it.
		if err := ctx.Err(); err != nil {
			return err
		}
		if claim != nil {
			claim()
		}
		stmt := tx.StmtContext(ctx, db.insertUsage)
		defer stmt.Close()
		for i, e := range events {
			res, err := stmt.ExecContext(ctx, e.RequestID, e.KeyID, e.Endpoint, e.Model,
				e.PromptTokens, e.CompletionTokens, e.Status, e.Latency.Microseconds(),
				e.Cost, e.Time.UnixNano(), e.SurfaceName(), e.AccountID)
			if err != nil {
				return fmt.Errorf("request %s: %w", e.RequestID, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			inserted[i] = n == 1
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), err)
	}
	return inserted, nil
}

// MonthTotals returns each key's totals for the UTC month that contains
// month, to seed metering.Counters at start-up.
func (db *DB) MonthTotals(ctx context.Context, month time.Time) (map[string]metering.Totals, error) {
	rows, err := db.Summary(ctx, metering.Query{
		From:    metering.MonthStart(month),
		To:      metering.NextMonthStart(month),
		GroupBy: metering.GroupKey,
	})
	if err != nil {
		return nil, err
	}
	return metering.TotalsOf(rows), nil
}

// groupExpr is the SQL expression each metering.Query.GroupBy groups on.
var groupExpr = map[string]string{
	metering.GroupNone:  `''`,
	metering.GroupDay:   `strftime('%Y-%m-%d', created_at / 1000000000, 'unixepoch')`,
	metering.GroupModel: `model`,
	metering.GroupKey:   `key_id`,

	metering.GroupAccount: `account_id`,
}

// where renders q's key and time filters as a WHERE clause and its
// arguments.
func where(q metering.Query) (string, []any) {
	var conds []string
	var args []any
	if q.KeyID != "" {
		conds = append(conds, "key_id = ?")
		args = append(args, q.KeyID)
	}
	if q.Model != "" {
		conds = append(conds, "model = ?")
		args = append(args, q.Model)
	}
	if !q.From.IsZero() {
		conds = append(conds, "created_at >= ?")
		args = append(args, q.From.UnixNano())
	}
	if !q.To.IsZero() {
		conds = append(conds, "created_at < ?")
		args = append(args, q.To.UnixNano())
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// Summary sums usage matching q into one row per group, ordered by group.
// An ungrouped query over no usage returns one row of zeros.
func (db *DB) Summary(ctx context.Context, q metering.Query) ([]metering.Row, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	cond, args := where(q)
	query := `SELECT ` + groupExpr[q.GroupBy] + ` AS g, COUNT(*), COALESCE(SUM(status < 500), 0),
		COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_micros), 0)
		FROM usage` + cond
	if q.GroupBy != metering.GroupNone {
		query += ` GROUP BY g ORDER BY g`
	}
	rows, err := db.sql.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: usage summary: %w", err)
	}
	defer rows.Close()
	var out []metering.Row
	for rows.Next() {
		var r metering.Row
		if err := rows.Scan(&r.Group, &r.Requests, &r.ChargedRequests, &r.PromptTokens, &r.CompletionTokens, &r.Cost); err != nil {
			return nil, fmt.Errorf("storage: usage summary: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: usage summary: %w", err)
	}
	return out, nil
}

// RecentEvents returns up to limit usage events matching q (GroupBy is
// ignored), newest first.
func (db *DB) RecentEvents(ctx context.Context, q metering.Query, limit int) ([]metering.Event, error) {
	q.GroupBy = metering.GroupNone
	if err := q.Validate(); err != nil {
		return nil, err
	}
	cond, args := where(q)
	rows, err := db.sql.QueryContext(ctx, `SELECT `+eventColumns+` FROM usage`+cond+
		` ORDER BY created_at DESC, request_id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("storage: recent usage: %w", err)
	}
	defer rows.Close()
	var out []metering.Event
	for rows.Next() {
		e, err := scanEvent(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("storage: recent usage: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: recent usage: %w", err)
	}
	return out, nil
}

// eventColumns are the usage columns scanEvent reads, in its order.
const eventColumns = `request_id, key_id, endpoint, model,
		prompt_tokens, completion_tokens, status, latency_us, cost_micros, created_at, surface, account_id`

func scanEvent(scan func(...any) error) (metering.Event, error) {
	var e metering.Event
	var latencyUS, createdAt int64
	if err := scan(&e.RequestID, &e.KeyID, &e.Endpoint, &e.Model,
		&e.PromptTokens, &e.CompletionTokens, &e.Status, &latencyUS, &e.Cost, &createdAt, &e.Surface, &e.AccountID); err != nil {
		return e, err
	}
	e.Latency = time.Duration(latencyUS) * time.Microsecond
	e.Time = time.Unix(0, createdAt).UTC()
	return e, nil
}

// ExportEvents calls fn with every usage event matching q (GroupBy is
// ignored), oldest first, one row at a time, so an export of any size runs in
// constant memory. An error from fn stops the export and is returned as is.
// The rows come from one read snapshot; a slow fn holds it open, which keeps
// the WAL from being checkpointed past it but blocks no writer.
func (db *DB) ExportEvents(ctx context.Context, q metering.Query, fn func(metering.Event) error) error {
	q.GroupBy = metering.GroupNone
	if err := q.Validate(); err != nil {
		return err
	}
	cond, args := where(q)
	rows, err := db.sql.QueryContext(ctx, `SELECT `+eventColumns+`
		FROM usage`+cond+` ORDER BY created_at, request_id`, args...)
	if err != nil {
		return fmt.Errorf("storage: usage export: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows.Scan)
		if err != nil {
			return fmt.Errorf("storage: usage export: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: usage export: %w", err)
	}
	return nil
}
