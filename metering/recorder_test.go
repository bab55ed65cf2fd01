package metering

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func closeRec(t *testing.T, r *Recorder) {
	t.Helper()
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRecordCommitsBeforeReturning(t *testing.T) {
	st := newFakeStore()
	var got []Event
	r := NewRecorder(st, RecorderOptions{OnCommit: func(evs []Event) { got = append(got, evs...) }})
	defer closeRec(t, r)
	ev := testEvent("r1")
	ev.Time = ev.Time.In(time.FixedZone("CET", 3600))
	if err := r.Record(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if st.count() != 1 || len(got) != 1 {
		t.Fatalf("after Record: stored %d, OnCommit saw %d", st.count(), len(got))
	}
	if got[0].Time.Location() != time.UTC || !got[0].Time.Equal(ev.Time) {
		t.Fatalf("time not normalised to UTC: %v", got[0].Time)
	}
}

// While one batch commits, later Records queue up and go in one batch.
func TestRecordGroupsWhileCommitting(t *testing.T) {
	st := newHeldStore(10)
	var sizes []int
	r := NewRecorder(st, RecorderOptions{MaxBatch: 8, OnBatch: func(n int, _ time.Duration, err error) {
		if err == nil {
			sizes = append(sizes, n)
		}
	}})
	var wg sync.WaitGroup
	record := func(id string) {
		defer wg.Done()
		if err := r.Record(context.Background(), testEvent(id)); err != nil {
			t.Error(err)
		}
	}
	wg.Add(1)
	go record("first")
	if n := <-st.entered; n != 1 {
		t.Fatalf("first batch size %d", n)
	}
	for i := range 10 {
		wg.Add(1)
		go record(fmt.Sprint("r", i))
	}
	for len(r.queue) < 8 { // the queue holds MaxBatch; the other 2 wait to send
		runtime.Gosched()
	}
	st.hold <- struct{}{} // release the first batch
	if n := <-st.entered; n != 8 {
		t.Fatalf("second batch size %d, want MaxBatch 8", n)
	}
	for len(r.queue) < 2 { // the 2 that waited to send are queued before the next batch is taken
		runtime.Gosched()
	}
	st.hold <- struct{}{}
	if n := <-st.entered; n != 2 {
		t.Fatalf("third batch size %d, want 2", n)
	}
	st.hold <- struct{}{}
	wg.Wait()
	closeRec(t, r)
	if st.count() != 11 || fmt.Sprint(sizes) != "[1 8 2]" {
		t.Fatalf("stored %d, want 11; OnBatch sizes %v, want [1 8 2]", st.count(), sizes)
	}
}

func TestRecordDuplicatesReachOnCommitOnce(t *testing.T) {
	st := newFakeStore()
	var mu sync.Mutex
	seen := map[string]int{}
	r := NewRecorder(st, RecorderOptions{OnCommit: func(evs []Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			seen[e.RequestID]++
		}
	}})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Record(context.Background(), testEvent(fmt.Sprint("dup", i%5))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	closeRec(t, r)
	if len(seen) != 5 {
		t.Fatalf("OnCommit saw %d ids, want 5", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("OnCommit saw %s %d times", id, n)
		}
	}
}

func TestRecordRetriesThenSucceeds(t *testing.T) {
	st := newFakeStore()
	st.failN = 2
	var logs bytes.Buffer
	r := NewRecorder(st, RecorderOptions{Backoff: time.Microsecond, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	defer closeRec(t, r)
	if err := r.Record(context.Background(), testEvent("r1")); err != nil {
		t.Fatalf("Record after two transient failures: %v", err)
	}
	if st.count() != 1 || strings.Count(logs.String(), "retrying") != 2 {
		t.Fatalf("stored %d; logs:\n%s", st.count(), logs.String())
	}
}

func TestRecordGivesUpAndLogsEvent(t *testing.T) {
	st := newFakeStore()
	st.failN = 1 << 30
	var logs bytes.Buffer
	committed := 0
	r := NewRecorder(st, RecorderOptions{
		Attempts: 3, Backoff: time.Microsecond,
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
		OnCommit: func(evs []Event) { committed += len(evs) },
	})
	defer closeRec(t, r)
	err := r.Record(context.Background(), testEvent("lost-1"))
	if !errors.Is(err, errFake) || !strings.Contains(err.Error(), "3 attempts") {
		t.Fatalf("Record = %v, want the store's error after 3 attempts", err)
	}
	if committed != 0 {
		t.Fatalf("OnCommit called for a failed batch")
	}
	var line struct {
		Level string
		Msg   string
		Event map[string]any
	}
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"level":"ERROR"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line.Event["request_id"] != "lost-1" || line.Event["cost_micros"] != 14.0 || line.Event["key_id"] != "key1" {
		t.Fatalf("error log does not carry the event: %+v\n%s", line, logs.String())
	}
}

func TestRecordRejectsInvalidEvents(t *testing.T) {
	r := NewRecorder(newFakeStore(), RecorderOptions{})
	defer closeRec(t, r)
	for name, mutate := range map[string]func(*Event){
		"no request id": func(e *Event) { e.RequestID = "" },
		"no key":        func(e *Event) { e.KeyID = "" },
		"no endpoint":   func(e *Event) { e.Endpoint = "" },
		"no model":      func(e *Event) { e.Model = "" },
		"neg tokens":    func(e *Event) { e.CompletionTokens = -1 },
		"neg cost":      func(e *Event) { e.Cost = -1 },
		"neg latency":   func(e *Event) { e.Latency = -1 },
		"status":        func(e *Event) { e.Status = 0 },
		"no time":       func(e *Event) { e.Time = time.Time{} },
	} {
		ev := testEvent("x")
		mutate(&ev)
		if err := r.Record(context.Background(), ev); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRecordContextDoneBeforeQueueing(t *testing.T) {
	st := newFakeStore()
	r := NewRecorder(st, RecorderOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Record(ctx, testEvent("r1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Record = %v", err)
	}
	closeRec(t, r)
	if st.count() != 0 {
		t.Fatal("cancelled event was stored")
	}
}

// A caller that gives up waiting before its event is claimed withdraws it:
// the event is still stored, unbilled (see recorder_withdraw_test.go).
func TestRecordContextDoneWhileWaiting(t *testing.T) {
	st := newHeldStore(1)
	r := NewRecorder(st, RecorderOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- r.Record(ctx, testEvent("r1")) }()
	<-st.entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Record = %v", err)
	}
	close(st.hold)
	closeRec(t, r)
	if st.count() != 1 {
		t.Fatal("queued event was dropped when its caller stopped waiting")
	}
}

func TestCloseDrainsAndRefuses(t *testing.T) {
	st := newHeldStore(100)
	var mu sync.Mutex
	committed := 0
	r := NewRecorder(st, RecorderOptions{MaxBatch: 16, OnCommit: func(evs []Event) {
		mu.Lock()
		committed += len(evs)
		mu.Unlock()
	}})
	var wg sync.WaitGroup
	results := make([]error, 40)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.Record(context.Background(), testEvent(fmt.Sprint("r", i)))
		}()
	}
	<-st.entered
	for len(r.queue) < 16 {
		runtime.Gosched()
	}
	closed := make(chan error)
	go func() { closed <- r.Close(context.Background()) }()
	close(st.hold)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Callers that got in before Close are committed; later ones were
	// refused with ErrClosed. At least the 17 queued before Close got in.
	accepted := 0
	for i, err := range results {
		_, stored := st.seen[fmt.Sprint("r", i)]
		switch {
		case err == nil && stored:
			accepted++
		case errors.Is(err, ErrClosed) && !stored:
		default:
			t.Errorf("r%d: Record = %v, stored = %v", i, err, stored)
		}
	}
	if accepted < 17 || st.count() != accepted || committed != accepted {
		t.Fatalf("accepted %d, stored %d, OnCommit %d", accepted, st.count(), committed)
	}
	if err := r.Record(context.Background(), testEvent("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close = %v, want ErrClosed", err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseTimesOut(t *testing.T) {
	st := newHeldStore(1)
	r := NewRecorder(st, RecorderOptions{})
	go r.Record(context.Background(), testEvent("r1"))
	<-st.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v", err)
	}
	close(st.hold)
	closeRec(t, r)
}

func BenchmarkRecorderFakeStore(b *testing.B) {
	r := NewRecorder(newNullStore(), RecorderOptions{})
	ev := testEvent("x")
	b.ReportAllocs()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := r.Record(ctx, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := r.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// nullStore accepts every batch at once; it measures the Recorder alone.
type nullStore struct{ ins []bool }

func newNullStore() *nullStore { return &nullStore{} }

func (n *nullStore) InsertEvents(_ context.Context, evs []Event, claim func()) ([]bool, error) {
	claim()
	for len(n.ins) < len(evs) {
		n.ins = append(n.ins, true)
	}
	return n.ins[:len(evs)], nil
}
