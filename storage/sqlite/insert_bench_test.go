package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// BenchmarkInsertEvents measures one group-commit transaction of n usage
// events on a real SQLite file: n=1 is what a lone request waits for when
// nothing else is in flight (its whole commit), larger n shows what group
// commit shares. ns/op is per transaction.
func BenchmarkInsertEvents(b *testing.B) {
	for _, n := range []int{1, 32, 512} {
		b.Run(fmt.Sprint("batch=", n), func(b *testing.B) {
			ctx := context.Background()
			db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			now := time.Now().UTC()
			evs := make([]metering.Event, n)
			seq := 0
			b.ReportAllocs()
			for b.Loop() {
				for i := range evs {
					seq++
					evs[i] = metering.Event{
						RequestID: fmt.Sprintf("req-%016d", seq), KeyID: fmt.Sprint("key-", seq%100),
						Endpoint: metering.EndpointGenerate, Model: "llama3.2",
						PromptTokens: 120, CompletionTokens: 300, Status: 200,
						Latency: 850 * time.Millisecond, Cost: 204, Time: now,
					}
				}
				if _, err := db.InsertEvents(ctx, evs, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
