package sqlite_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/metering"
	"tollgate/storage/sqlite"
)

var day0 = time.Date(2025, 3, 14, 10, 0, 0, 123456789, time.UTC)

// usageEvent returns a valid event; at is added to day0.
func usageEvent(id, key, model string, at time.Duration) metering.Event {
	return metering.Event{
		RequestID: id, KeyID: key, Endpoint: metering.EndpointGenerate, Model: model, Surface: metering.SurfaceNative,
		PromptTokens: 12, CompletionTokens: 30, Status: 200, Latency: 2345 * time.Microsecond,
		Cost: 21, Time: day0.Add(at),
	}
}

func exportAll(t *testing.T, db *sqlite.DB, q metering.Query) []metering.Event {
	t.Helper()
	var out []metering.Event
	if err := db.ExportEvents(context.Background(), q, func(e metering.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInsertEventsRoundTripAndDuplicates(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	a := usageEvent("a", "k1", "llama3.2", 0)
	b := usageEvent("b", "k1", "llama3.2", time.Second)
	ins, err := db.InsertEvents(ctx, []metering.Event{a, b, a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ins) != "[true true false]" {
		t.Fatalf("inserted = %v", ins)
	}
	a2 := a
	a2.PromptTokens = 9999 // a retried write with other numbers must not replace the first
	ins, err = db.InsertEvents(ctx, []metering.Event{a2}, nil)
	if err != nil || ins[0] {
		t.Fatalf("second insert of a: %v, %v", ins, err)
	}
	got := exportAll(t, db, metering.Query{})
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("export = %+v\nwant %+v", got, []metering.Event{a, b})
	}
}

func TestRecorderDuplicatesCountOnce(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	counters := metering.NewCounters(func() time.Time { return day0 })
	var mu sync.Mutex
	seen := map[string]int{}
	rec := metering.NewRecorder(db, metering.RecorderOptions{OnCommit: func(evs []metering.Event) {
		counters.AddAll(evs)
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			seen[e.RequestID]++
		}
	}})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rec.Record(ctx, usageEvent("same", "k1", "llama3.2", 0)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := rec.Record(ctx, usageEvent("same", "k1", "llama3.2", 0)); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(exportAll(t, db, metering.Query{})); n != 1 {
		t.Fatalf("%d rows for one request id", n)
	}
	if seen["same"] != 1 || counters.Month("k1").Requests != 1 {
		t.Fatalf("OnCommit saw it %d times; counter %+v", seen["same"], counters.Month("k1"))
	}
}

func TestRecorderConcurrentWriters(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	var mu sync.Mutex
	committed := 0
	rec := metering.NewRecorder(db, metering.RecorderOptions{OnCommit: func(evs []metering.Event) {
		mu.Lock()
		committed += len(evs)
		mu.Unlock()
	}})
	const goroutines, each = 32, 100
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ev := usageEvent(fmt.Sprintf("g%d-%d", g, i), fmt.Sprint("k", g%4), "llama3.2", time.Duration(i)*time.Millisecond)
				if err := rec.Record(ctx, ev); err != nil {
					t.Errorf("Record: %v", err) // "database is locked" would land here
					return
				}
			}
		}()
	}
	// Reads and other writers run at the same time as the recorder.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 50 {
			if _, err := db.Summary(ctx, metering.Query{GroupBy: metering.GroupKey}); err != nil {
				t.Errorf("Summary: %v", err)
				return
			}
			if _, err := db.InsertEvents(ctx, []metering.Event{usageEvent(fmt.Sprint("side", i), "side", "m", 0)}, nil); err != nil {
				t.Errorf("InsertEvents beside the recorder: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Summary(ctx, metering.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if rows[0].Requests != goroutines*each+50 || committed != goroutines*each {
		t.Fatalf("rows %d (want %d), OnCommit %d", rows[0].Requests, goroutines*each+50, committed)
	}
}

func TestRecorderCloseDrainsIntoDatabase(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	rec := metering.NewRecorder(db, metering.RecorderOptions{MaxBatch: 7})
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rec.Record(ctx, usageEvent(fmt.Sprint("r", i), "k", "m", 0)); err == nil {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Every Record that returned nil is in the table, and nothing else.
	if n := len(exportAll(t, db, metering.Query{})); n != accepted {
		t.Fatalf("%d rows, %d accepted", n, accepted)
	}
	// Reopening sees the same rows: they were committed, not just queued.
	db2, err := sqlite.Open(ctx, db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if n := len(exportAll(t, db2, metering.Query{})); n != accepted {
		t.Fatalf("after reopen: %d rows, %d accepted", n, accepted)
	}
}

func seedReport(t *testing.T, db *sqlite.DB) {
	t.Helper()
	evs := []metering.Event{
		usageEvent("1", "k1", "llama3.2", 0),
		usageEvent("2", "k1", "llama3.2", time.Hour),
		usageEvent("3", "k1", "nomic-embed-text", 24*time.Hour),
		usageEvent("4", "k2", "llama3.2", 24*time.Hour+time.Minute),
		usageEvent("5", "k2", "llama3.2", 18*24*time.Hour), // 1 April
	}
	evs[2].Endpoint, evs[2].CompletionTokens, evs[2].Cost = metering.EndpointEmbed, 0, 3
	if _, err := db.InsertEvents(context.Background(), evs, nil); err != nil {
		t.Fatal(err)
	}
}

func rowsString(rows []metering.Row) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%s:%d/%d/%d/%d ", r.Group, r.Requests, r.PromptTokens, r.CompletionTokens, r.Cost)
	}
	return strings.TrimSpace(b.String())
}

func TestSummaryGrouping(t *testing.T) {
	db := openTest(t)
	seedReport(t, db)
	ctx := context.Background()
	march := metering.Query{From: metering.MonthStart(day0), To: metering.NextMonthStart(day0)}
	for _, tc := range []struct {
		name string
		q    metering.Query
		want string
	}{
		{"all", metering.Query{}, ":5/60/120/87"},
		{"march", march, ":4/48/90/66"},
		{"by day", metering.Query{GroupBy: "day"}, "2025-03-14:2/24/60/42 2025-03-15:2/24/30/24 2025-04-01:1/12/30/21"},
		{"by model", metering.Query{GroupBy: "model"}, "llama3.2:4/48/120/84 nomic-embed-text:1/12/0/3"},
		{"by key", metering.Query{GroupBy: "key"}, "k1:3/36/60/45 k2:2/24/60/42"},
		{"one key by day", metering.Query{KeyID: "k2", GroupBy: "day"}, "2025-03-15:1/12/30/21 2025-04-01:1/12/30/21"},
		{"to is exclusive", metering.Query{From: day0, To: day0.Add(time.Hour), GroupBy: "key"}, "k1:1/12/30/21"},
		{"nothing, ungrouped", metering.Query{KeyID: "nobody"}, ":0/0/0/0"},
		{"nothing, grouped", metering.Query{KeyID: "nobody", GroupBy: "day"}, ""},
	} {
		rows, err := db.Summary(ctx, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := rowsString(rows); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
	if _, err := db.Summary(ctx, metering.Query{GroupBy: "week"}); err == nil {
		t.Error("unknown group_by accepted")
	}
}

func TestMonthTotalsSeedCounters(t *testing.T) {
	db := openTest(t)
	seedReport(t, db)
	ctx := context.Background()
	totals, err := db.MonthTotals(ctx, day0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]metering.Totals{
		"k1": {Requests: 3, PromptTokens: 36, CompletionTokens: 60, Cost: 45},
		"k2": {Requests: 1, PromptTokens: 12, CompletionTokens: 30, Cost: 21},
	}
	if fmt.Sprint(totals) != fmt.Sprint(want) {
		t.Fatalf("March totals = %v, want %v", totals, want)
	}
	now := day0
	c := metering.NewCounters(func() time.Time { return now })
	c.Seed(now, totals)
	if c.Month("k2") != want["k2"] {
		t.Fatalf("seeded k2 = %+v", c.Month("k2"))
	}
	now = time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
	if c.Month("k2") != (metering.Totals{}) {
		t.Fatalf("March totals still count in April: %+v", c.Month("k2"))
	}
	april, err := db.MonthTotals(ctx, now)
	if err != nil || april["k2"].Requests != 1 || len(april) != 1 {
		t.Fatalf("April totals = %v, %v", april, err)
	}
}

func TestExportCSVAndJSON(t *testing.T) {
	db := openTest(t)
	seedReport(t, db)
	ctx := context.Background()
	q := metering.Query{KeyID: "k1", From: day0.Add(time.Minute)}

	var jbuf bytes.Buffer
	jw := metering.NewJSONWriter(&jbuf)
	if err := db.ExportEvents(ctx, q, jw.Write); err != nil {
		t.Fatal(err)
	}
	if err := jw.Close(); err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	if err := json.Unmarshal(jbuf.Bytes(), &objs); err != nil {
		t.Fatalf("%v\n%s", err, jbuf.String())
	}
	if len(objs) != 2 || objs[0]["request_id"] != "2" || objs[1]["request_id"] != "3" {
		t.Fatalf("JSON export: %s", jbuf.String())
	}
	for _, k := range []string{"request_id", "key_id", "endpoint", "model", "prompt_tokens", "completion_tokens", "cost", "status", "created_at", "cost_micros", "latency_ms", "total_tokens"} {
		if _, ok := objs[0][k]; !ok {
			t.Errorf("JSON export lacks %s", k)
		}
	}
	if objs[0]["created_at"] != "2025-03-14T11:00:00.123456789Z" || objs[0]["cost"] != "0.000021" || objs[0]["latency_ms"] != 2.345 {
		t.Errorf("JSON values: %v", objs[0])
	}

	var cbuf bytes.Buffer
	cw, err := metering.NewEventWriter(&cbuf, "csv")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ExportEvents(ctx, q, cw.Write); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&cbuf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || strings.Join(recs[0], ",") != strings.Join(metering.ExportColumns, ",") || recs[2][0] != "3" || recs[2][2] != "embed" {
		t.Fatalf("CSV export: %q", recs)
	}
}

func TestExportStopsOnCallbackError(t *testing.T) {
	db := openTest(t)
	seedReport(t, db)
	stop := fmt.Errorf("client went away")
	n := 0
	err := db.ExportEvents(context.Background(), metering.Query{}, func(metering.Event) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Fatalf("ExportEvents = %v after %d rows", err, n)
	}
}

// A request that failed on our side (5xx) is recorded with its tokens but
// is not charged to a request quota, in the counters or their seed.
func TestServerFailuresAreNotChargedRequests(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	ok := usageEvent("r-ok", "k", "m", time.Minute)
	failed := usageEvent("r-502", "k", "m", 2*time.Minute)
	failed.Status, failed.PromptTokens, failed.CompletionTokens = 502, 0, 0
	gone := usageEvent("r-499", "k", "m", 3*time.Minute)
	gone.Status = 499
	if _, err := db.InsertEvents(ctx, []metering.Event{ok, failed, gone}, nil); err != nil {
		t.Fatal(err)
	}
	totals, err := db.MonthTotals(ctx, day0)
	if err != nil {
		t.Fatal(err)
	}
	if got := totals["k"]; got.Requests != 2 || got.PromptTokens != 24 {
		t.Fatalf("seed = %+v, want 2 charged requests (200 and 499) and the tokens of all", got)
	}
	c := metering.NewCounters(func() time.Time { return day0 })
	c.AddAll([]metering.Event{ok, failed, gone})
	if got := c.Month("k"); got != totals["k"] {
		t.Fatalf("live counters %+v differ from the seed %+v", got, totals["k"])
	}
	rows, err := db.Summary(ctx, metering.Query{From: day0, To: day0.Add(time.Hour)})
	if err != nil || rows[0].Requests != 3 || rows[0].ChargedRequests != 2 {
		t.Fatalf("summary %+v (%v): want 3 requests, 2 charged", rows, err)
	}
}
