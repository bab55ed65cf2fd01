package metering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"tollgate"
)

// unbilled returns ev as a withdrawn event must be stored, spelled out here
// rather than taken from the code under test.
func unbilled(ev Event) Event {
	ev.Status = 503
	ev.PromptTokens, ev.CompletionTokens, ev.Cost = 0, 0, 0
	return ev
}

// commitLog collects what OnCommit receives.
type commitLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *commitLog) add(evs []Event) {
	l.mu.Lock()
	l.evs = append(l.evs, evs...)
	l.mu.Unlock()
}

func (l *commitLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

// waitBlockedIn waits until some goroutine's stack shows fn, i.e. a Record
// has reached that point and is blocked there.
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if bytes.Contains(buf[:runtime.Stack(buf, true)], []byte(fn)) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no goroutine blocked in %s", fn)
}

// The bug this guards against: a caller that timed out while its batch
// waited for the write lock answered 503, and its event was committed later
// as billed anyway.
func TestRecordWithdrawnWhileWaitingForLock(t *testing.T) {
	st := newHeldStore(1) // holds each batch before it claims: the lock wait
	var log commitLog
	r := NewRecorder(st, RecorderOptions{OnCommit: log.add, CommitTimeout: time.Hour})
	ev := testEvent("r1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Record(ctx, ev) }()
	<-st.entered
	select {
	case err := <-errc:
		if !errors.Is(err, ErrWithdrawn) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Record = %v, want ErrWithdrawn wrapping the deadline", err)
		}
	case <-time.After(5 * time.Second): // the lock is not released before Record returns
		t.Fatal("Record still waiting for a batch that does not hold the lock")
	}
	close(st.hold) // the lock is free: the batch goes on
	closeRec(t, r)
	want := unbilled(ev)
	if got, ok := st.stored("r1"); !ok || got != want {
		t.Fatalf("stored %+v (%v), want the unbilled form %+v", got, ok, want)
	}
	if got := log.all(); len(got) != 1 || got[0] != want {
		t.Fatalf("OnCommit got %+v, want [%+v]", got, want)
	}
	c := NewCounters(func() time.Time { return ev.Time })
	c.AddAll(log.all())
	if m := c.Month("key1"); m != (Totals{}) {
		t.Fatalf("a withdrawn event counted against the key: %+v", m)
	}
}

// Once the store has claimed the batch under its lock, a caller whose
// context ends waits for the commit and is billed.
func TestRecordLateAfterClaimIsBilled(t *testing.T) {
	st := newFakeStore()
	st.claimed, st.holdClaimed = make(chan int, 1), make(chan struct{})
	var log commitLog
	r := NewRecorder(st, RecorderOptions{OnCommit: log.add})
	ev := testEvent("r1")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Record(ctx, ev) }()
	<-st.claimed
	cancel()
	waitBlockedIn(t, "(*Recorder).waitLate") // past its deadline, still waiting
	close(st.holdClaimed)                    // the commit succeeds
	if err := <-errc; err != nil {
		t.Fatalf("Record = %v, want nil: the event was claimed and committed", err)
	}
	closeRec(t, r)
	if got, ok := st.stored("r1"); !ok || got != ev {
		t.Fatalf("stored %+v (%v), want the billed event", got, ok)
	}
	if got := log.all(); len(got) != 1 || got[0] != ev {
		t.Fatalf("OnCommit got %+v", got)
	}
}

// A claimed attempt fails while its caller is past its deadline: the
// caller is told at once, before the retry, and the retry stores the event
// unbilled.
func TestRecordLateCallerWithdrawnBeforeRetry(t *testing.T) {
	st := newFakeStore()
	st.failN = 1
	st.hold, st.claimed, st.holdClaimed = make(chan struct{}), make(chan int, 2), make(chan struct{})
	var log commitLog
	r := NewRecorder(st, RecorderOptions{OnCommit: log.add, Backoff: time.Microsecond,
		Logger: slog.New(slog.DiscardHandler)})
	ev := testEvent("r1")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Record(ctx, ev) }()
	st.hold <- struct{}{} // attempt 1 gets the lock and claims
	<-st.claimed
	cancel()
	waitBlockedIn(t, "(*Recorder).waitLate")
	st.holdClaimed <- struct{}{} // attempt 1 fails
	select {
	case err := <-errc:
		if !errors.Is(err, ErrWithdrawn) || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), errFake.Error()) {
			t.Fatalf("Record = %v, want ErrWithdrawn after the failed attempt", err)
		}
	case <-time.After(5 * time.Second): // attempt 2 waits on hold until we feed it
		t.Fatal("Record still waiting: not withdrawn before the retry")
	}
	st.hold <- struct{}{} // attempt 2
	<-st.claimed
	st.holdClaimed <- struct{}{}
	closeRec(t, r)
	want := unbilled(ev)
	if got, ok := st.stored("r1"); !ok || got != want {
		t.Fatalf("stored %+v (%v), want the unbilled form", got, ok)
	}
	if got := log.all(); len(got) != 1 || got[0] != want {
		t.Fatalf("OnCommit got %+v, want [%+v]", got, want)
	}
}

// When the last attempt fails, a late caller gets the store's error and
// the event is not stored: the answer is withheld, nothing is billed.
func TestRecordLateCallerLastAttemptFails(t *testing.T) {
	st := newFakeStore()
	st.failN = 1
	st.claimed, st.holdClaimed = make(chan int, 1), make(chan struct{})
	var logs bytes.Buffer
	r := NewRecorder(st, RecorderOptions{Attempts: 1, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Record(ctx, testEvent("r1")) }()
	<-st.claimed
	cancel()
	waitBlockedIn(t, "(*Recorder).waitLate")
	close(st.holdClaimed)
	if err := <-errc; !errors.Is(err, errFake) || errors.Is(err, ErrWithdrawn) {
		t.Fatalf("Record = %v, want the store's error", err)
	}
	closeRec(t, r)
	if _, ok := st.stored("r1"); ok || !strings.Contains(logs.String(), "usage record lost") {
		t.Fatalf("stored %v; logs:\n%s", ok, logs.String())
	}
}

// claimlessStore commits without calling claim, breaking the contract.
type claimlessStore struct{ *fakeStore }

func (s *claimlessStore) InsertEvents(ctx context.Context, events []Event, _ func()) ([]bool, error) {
	return s.fakeStore.InsertEvents(ctx, events, func() {})
}

func TestRecordReportsStoreThatSkipsClaim(t *testing.T) {
	st := &claimlessStore{newFakeStore()}
	r := NewRecorder(st, RecorderOptions{Attempts: 1, Logger: slog.New(slog.DiscardHandler)})
	defer closeRec(t, r)
	if err := r.Record(context.Background(), testEvent("r1")); err == nil || !strings.Contains(err.Error(), "claim") {
		t.Fatalf("Record = %v, want an error naming the missing claim", err)
	}
}

// chaosStore delays each attempt at random before and after claiming, and
// fails some attempts on either side of the claim, never more than
// maxFails in a row so that a batch always commits within Attempts.
type chaosStore struct {
	mu    sync.Mutex
	rnd   *rand.Rand
	seen  map[string]Event
	fails int // consecutive failed attempts
}

const maxFails = 3

func (s *chaosStore) dice() (before, after time.Duration, failBefore, failAfter bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before = time.Duration(s.rnd.IntN(1500)) * time.Microsecond
	after = time.Duration(s.rnd.IntN(1500)) * time.Microsecond
	if s.fails < maxFails {
		switch s.rnd.IntN(8) {
		case 0:
			failBefore = true
		case 1:
			failAfter = true
		}
	}
	if failBefore || failAfter {
		s.fails++
	} else {
		s.fails = 0
	}
	return
}

func (s *chaosStore) InsertEvents(ctx context.Context, events []Event, claim func()) ([]bool, error) {
	before, after, failBefore, failAfter := s.dice()
	time.Sleep(before)
	if failBefore {
		return nil, errFake
	}
	claim()
	time.Sleep(after)
	if failAfter {
		return nil, errFake
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inserted := make([]bool, len(events))
	for i, e := range events {
		if _, dup := s.seen[e.RequestID]; !dup {
			s.seen[e.RequestID] = e
			inserted[i] = true
		}
	}
	return inserted, nil
}

// For every event, whatever the timing: Record returned nil exactly when
// the event is stored billed, and ErrWithdrawn exactly when it is stored
// unbilled; any other error (a context that ended before the event was
// queued) leaves nothing stored. OnCommit sees exactly what is stored.
func TestRecordBilledIffNil(t *testing.T) {
	st := &chaosStore{rnd: rand.New(rand.NewPCG(1, 2)), seen: map[string]Event{}}
	var log commitLog
	r := NewRecorder(st, RecorderOptions{
		MaxBatch: 32, Attempts: maxFails + 1, Backoff: 100 * time.Microsecond,
		OnCommit: log.add, Logger: slog.New(slog.DiscardHandler),
	})
	const goroutines, each = 40, 25
	events := make([]Event, goroutines*each)
	results := make([]error, len(events))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range each {
				n := g*each + i
				ev := testEvent(fmt.Sprint("r", n))
				ev.PromptTokens, ev.Cost = int64(1+rnd.IntN(100)), tollgate.Money(1+rnd.IntN(1000))
				events[n] = ev
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if rnd.IntN(10) > 0 { // most with a deadline, some without
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rnd.IntN(5000))*time.Microsecond)
				}
				results[n] = r.Record(ctx, ev)
				cancel()
			}
		}()
	}
	wg.Wait()
	closeRec(t, r)

	var nils, withdrawn, refused int
	for n, ev := range events {
		err := results[n]
		got, stored := st.seen[ev.RequestID]
		switch {
		case err == nil:
			nils++
			if !stored || got != ev {
				t.Errorf("%s: Record = nil but stored %+v (%v)", ev.RequestID, got, stored)
			}
		case errors.Is(err, ErrWithdrawn):
			withdrawn++
			if !stored || got != unbilled(ev) {
				t.Errorf("%s: Record = %v but stored %+v (%v)", ev.RequestID, err, got, stored)
			}
		case errors.Is(err, context.DeadlineExceeded):
			refused++
			if stored {
				t.Errorf("%s: Record = %v but stored %+v", ev.RequestID, err, got)
			}
		default:
			t.Errorf("%s: Record = %v", ev.RequestID, err)
		}
	}
	if len(st.seen) != len(events)-refused {
		t.Errorf("%d stored, want %d", len(st.seen), len(events)-refused)
	}
	committed := log.all()
	if len(committed) != len(st.seen) {
		t.Errorf("OnCommit got %d events, %d stored", len(committed), len(st.seen))
	}
	for _, e := range committed {
		if st.seen[e.RequestID] != e {
			t.Errorf("OnCommit got %+v, stored %+v", e, st.seen[e.RequestID])
		}
	}
	t.Logf("%d billed, %d withdrawn, %d not queued", nils, withdrawn, refused)
	if nils == 0 || withdrawn == 0 {
		t.Errorf("the timings did not exercise both outcomes")
	}
}
