package postgres

import (
	"context"
	"fmt"
	"time"

	"tollgate"
	"tollgate/metering"
)

// AccountMonthTotals returns the totals, in the UTC month of month, of the
// usage made under account id (each usage row keeps the account its key
// had then, so a key moved later does not move its past usage). The Redis
// limiter seeds an account's month from it.
func (db *DB) AccountMonthTotals(ctx context.Context, id string, month time.Time) (metering.Totals, error) {
	var t metering.Totals
	var cost int64
	err := db.pool.QueryRow(ctx, `SELECT COUNT(*) FILTER (WHERE status < 500), COALESCE(SUM(prompt_tokens), 0)::bigint,
		COALESCE(SUM(completion_tokens), 0)::bigint, COALESCE(SUM(cost_micros), 0)::bigint
		FROM usage WHERE account_id = $1 AND account_id != '' AND created_at >= $2 AND created_at < $3`,
		id, metering.MonthStart(month).UnixNano(), metering.NextMonthStart(month).UnixNano()).
		Scan(&t.Requests, &t.PromptTokens, &t.CompletionTokens, &cost)
	if err != nil {
		return metering.Totals{}, fmt.Errorf("storage: account month usage: %w", db.wrap(err))
	}
	t.Cost = tollgate.Money(cost)
	return t, nil
}
