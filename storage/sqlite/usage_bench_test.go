package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// BenchmarkRecorder measures durable usage recording end to end: many
// goroutines (as many as concurrent HTTP requests) call Record against a real
// SQLite file, each waiting until its event is committed. records/s is the
// committed, durable rate.
func BenchmarkRecorder(b *testing.B) {
	for _, par := range []int{16, 64} { // goroutines per GOMAXPROCS
		b.Run(fmt.Sprint("parallel=", par), func(b *testing.B) {
			db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var batches atomic.Int64
			rec := metering.NewRecorder(db, metering.RecorderOptions{
				OnBatch: func(int, time.Duration, error) { batches.Add(1) },
			})
			var seq atomic.Int64
			now := time.Now().UTC()
			b.ReportAllocs()
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					n := seq.Add(1)
					ev := metering.Event{
						RequestID: fmt.Sprintf("req-%016d", n), KeyID: fmt.Sprint("key-", n%100),
						Endpoint: metering.EndpointGenerate, Model: "llama3.2",
						PromptTokens: 120, CompletionTokens: 300, Status: 200,
						Latency: 850 * time.Millisecond, Cost: 204, Time: now,
					}
					if err := rec.Record(ctx, ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if err := rec.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(b.N)/float64(max(batches.Load(), 1)), "records/batch")
		})
	}
}
