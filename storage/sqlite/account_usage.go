package sqlite

import (
	"context"
	"fmt"
	"time"

	"tollgate/metering"
)

// AccountMonthTotals returns the totals, in the UTC month of month, of the
// usage made under account id (each usage row keeps the account its key
// had then, so a key moved later does not move its past usage). The Redis
// limiter seeds an account's month from it.
func (db *DB) AccountMonthTotals(ctx context.Context, id string, month time.Time) (metering.Totals, error) {
	var t metering.Totals
	err := db.sql.QueryRowContext(ctx, `SELECT COALESCE(SUM(status < 500), 0), COALESCE(SUM(prompt_tokens), 0),
		COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_micros), 0)
		FROM usage WHERE account_id = ? AND account_id != '' AND created_at >= ? AND created_at < ?`,
		id, metering.MonthStart(month).UnixNano(), metering.NextMonthStart(month).UnixNano()).
		Scan(&t.Requests, &t.PromptTokens, &t.CompletionTokens, &t.Cost)
	if err != nil {
		return metering.Totals{}, fmt.Errorf("storage: account month usage: %w", err)
	}
	return t, nil
}
