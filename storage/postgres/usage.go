package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tollgate"
	"tollgate/metering"
)

// DB satisfies metering.BatchStore.
var _ metering.BatchStore = (*DB)(nil)

// InsertEvents stores events in one transaction, one INSERT for the batch.
// An event whose request id is already stored, earlier in the table or
// earlier in events, is skipped; inserted[i] reports whether events[i] was
// newly stored. On error nothing is stored.
//
// claim, unless nil, is called once the transaction has begun on a live
// connection, before any event is read: what is stored is events as claim
// left them, and from the claim on only the insert and the commit remain.
// If no connection can be had (the server is down, ctx ended), claim is not
// called. See metering.BatchStore.
func (db *DB) InsertEvents(ctx context.Context, events []metering.Event, claim func()) ([]bool, error) {
	inserted := make([]bool, len(events))
	if len(events) == 0 {
		if claim != nil {
			claim()
		}
		return inserted, nil
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), db.wrap(err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), err)
	}
	if claim != nil {
		claim()
	}
	// Only the first event of each request id is offered; later ones in the
	// batch are duplicates, skipped as a stored one would be.
	first := make(map[string]int, len(events))
	var (
		ids, keys, endpoints, models, surfaces, accounts []string
		prompt, completion, latency, cost, at            []int64
		status                                           []int32
	)
	for i, e := range events {
		if _, dup := first[e.RequestID]; dup {
			continue
		}
		first[e.RequestID] = i
		ids, keys, endpoints, models = append(ids, e.RequestID), append(keys, e.KeyID), append(endpoints, string(e.Endpoint)), append(models, e.Model)
		prompt, completion = append(prompt, e.PromptTokens), append(completion, e.CompletionTokens)
		status, latency = append(status, int32(e.Status)), append(latency, e.Latency.Microseconds())
		cost, at, surfaces = append(cost, int64(e.Cost)), append(at, e.Time.UnixNano()), append(surfaces, e.SurfaceName())
		accounts = append(accounts, e.AccountID)
	}
	rows, err := tx.Query(ctx, `INSERT INTO usage(request_id, key_id, endpoint, model,
		prompt_tokens, completion_tokens, status, latency_us, cost_micros, created_at, surface, account_id)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
			$7::int[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[])
		ON CONFLICT (request_id) DO NOTHING RETURNING request_id`,
		ids, keys, endpoints, models, prompt, completion, status, latency, cost, at, surfaces, accounts)
	if err != nil {
		return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), db.wrap(err))
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), err)
		}
		inserted[first[id]] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), db.wrap(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("storage: insert %d usage events: %w", len(events), db.wrap(err))
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
	metering.GroupDay:   `to_char(to_timestamp(created_at / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
	metering.GroupModel: `model`,
	metering.GroupKey:   `key_id`,

	metering.GroupAccount: `account_id`,
}

// where renders q's key and time filters as a WHERE clause and its
// arguments.
func where(q metering.Query) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	if q.KeyID != "" {
		add("key_id = ?", q.KeyID)
	}
	if q.Model != "" {
		add("model = ?", q.Model)
	}
	if !q.From.IsZero() {
		add("created_at >= ?", q.From.UnixNano())
	}
	if !q.To.IsZero() {
		add("created_at < ?", q.To.UnixNano())
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
	query := `SELECT ` + groupExpr[q.GroupBy] + ` AS g, COUNT(*), COUNT(*) FILTER (WHERE status < 500),
		COALESCE(SUM(prompt_tokens), 0)::bigint, COALESCE(SUM(completion_tokens), 0)::bigint,
		COALESCE(SUM(cost_micros), 0)::bigint
		FROM usage` + cond
	if q.GroupBy != metering.GroupNone {
		query += ` GROUP BY g ORDER BY ` + groupExpr[q.GroupBy] + ` COLLATE "C"`
	}
	rows, err := db.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: usage summary: %w", db.wrap(err))
	}
	defer rows.Close()
	var out []metering.Row
	for rows.Next() {
		var r metering.Row
		var cost int64
		if err := rows.Scan(&r.Group, &r.Requests, &r.ChargedRequests, &r.PromptTokens, &r.CompletionTokens, &cost); err != nil {
			return nil, fmt.Errorf("storage: usage summary: %w", err)
		}
		r.Cost = tollgate.Money(cost)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: usage summary: %w", db.wrap(err))
	}
	return out, nil
}

// ExportEvents calls fn with every usage event matching q (GroupBy is
// ignored), oldest first, one row at a time. An error from fn stops the
// export and is returned as is.
func (db *DB) ExportEvents(ctx context.Context, q metering.Query, fn func(metering.Event) error) error {
	q.GroupBy = metering.GroupNone
	if err := q.Validate(); err != nil {
		return err
	}
	cond, args := where(q)
	rows, err := db.pool.Query(ctx, `SELECT `+eventColumns+`
		FROM usage`+cond+` ORDER BY created_at, request_id COLLATE "C"`, args...)
	if err != nil {
		return fmt.Errorf("storage: usage export: %w", db.wrap(err))
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return fmt.Errorf("storage: usage export: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: usage export: %w", db.wrap(err))
	}
	return nil
}

// RecentEvents returns up to limit usage events matching q (GroupBy is
// ignored), newest first.
func (db *DB) RecentEvents(ctx context.Context, q metering.Query, limit int) ([]metering.Event, error) {
	q.GroupBy = metering.GroupNone
	if err := q.Validate(); err != nil {
		return nil, err
	}
	cond, args := where(q)
	rows, err := db.pool.Query(ctx, `SELECT `+eventColumns+` FROM usage`+cond+
		` ORDER BY created_at DESC, request_id COLLATE "C" DESC LIMIT `+strconv.Itoa(max(0, limit)), args...)
	if err != nil {
		return nil, fmt.Errorf("storage: recent usage: %w", db.wrap(err))
	}
	defer rows.Close()
	var out []metering.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: recent usage: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: recent usage: %w", db.wrap(err))
	}
	return out, nil
}

// eventColumns are the usage columns scanEvent reads, in its order.
const eventColumns = `request_id, key_id, endpoint, model,
		prompt_tokens, completion_tokens, status, latency_us, cost_micros, created_at, surface, account_id`

// scanEvent reads one row of eventColumns.
func scanEvent(rows pgx.Rows) (metering.Event, error) {
	var e metering.Event
	var latencyUS, createdAt, cost int64
	var status int32
	if err := rows.Scan(&e.RequestID, &e.KeyID, &e.Endpoint, &e.Model,
		&e.PromptTokens, &e.CompletionTokens, &status, &latencyUS, &cost, &createdAt, &e.Surface, &e.AccountID); err != nil {
		return e, err
	}
	e.Status, e.Cost = int(status), tollgate.Money(cost)
	e.Latency = time.Duration(latencyUS) * time.Microsecond
	e.Time = time.Unix(0, createdAt).UTC()
	return e, nil
}
