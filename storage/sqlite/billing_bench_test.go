package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"tollgate/billing"
	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// BenchmarkBillingGroups measures what one export batch asks of SQLite: a
// day of usage (200,000 rows, 100 accounts) is in the table, and the batch
// sums one minute of it (about 140 rows) per account and interval, plus
// the rows committed late since the last batch, and reads the horizon.
func BenchmarkBillingGroups(b *testing.B) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const rows = 200_000
	batch := make([]metering.Event, 0, 1000)
	for i := range rows {
		batch = append(batch, metering.Event{RequestID: fmt.Sprintf("r%07d", i), KeyID: fmt.Sprint("k", i%300),
			AccountID: fmt.Sprint("acct_", i%100), Endpoint: metering.EndpointGenerate, Model: "m",
			PromptTokens: 20, CompletionTokens: 30, Status: 200, Cost: 50,
			Time: day.Add(time.Duration(i) * 24 * time.Hour / rows)})
		if len(batch) == cap(batch) {
			if _, err := db.InsertEvents(ctx, batch, nil); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	horizon, err := db.UsageHorizon(ctx)
	if err != nil {
		b.Fatal(err)
	}
	from := day.Add(12 * time.Hour)
	plan := billing.Plan{From: billing.Cursor{Before: from, Seq: horizon - 50}, To: billing.Cursor{Before: from.Add(time.Minute), Seq: horizon},
		Interval: time.Minute}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := db.UsageHorizon(ctx); err != nil {
			b.Fatal(err)
		}
		groups, err := db.BillingGroups(ctx, plan)
		if err != nil || len(groups) < 100 {
			b.Fatalf("%d groups, %v", len(groups), err)
		}
	}
}
