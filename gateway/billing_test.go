package gateway_test

// The billing rule: a request is billed exactly what its client received.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
	"tollgate/metering"
)

// A non-streamed call Ollama fails is a 502 whose row bills nothing, even
// when Ollama had produced text before failing (the client got none of it),
// and it is not charged to the key's request quota.
func TestGenerateBackendErrorBillsNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault ollamatest.Fault
	}{
		{"error status", ollamatest.StatusFault(500, "")},
		{"error line before any output", ollamatest.ErrorAfter(0, "runner crashed")},
		{"error line after output", ollamatest.ErrorAfter(2, "runner crashed")},
		{"cut after output", ollamatest.CutAfter(2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withFake(ollamatest.WithFault(tc.fault), ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 5})))
			k := key("key_fail", tollgate.Limits{MonthlyRequests: 3, MonthlyTokens: 1000})
			c := e.caller(k)
			res, err := e.gw.Generate(context.Background(), c, prompt("hello"), nil)
			checkCode(t, err, tollgate.CodeBackendError)
			if s := tollgate.ErrorCode(err).Status(); s != 502 {
				t.Errorf("status of %s is %d, want 502", tollgate.ErrorCode(err), s)
			}
			if res.Status != 502 || res.Usage != (inference.Usage{}) || res.Model != "chat" {
				t.Errorf("result: status %d usage %+v model %q, want 502, nothing, chat", res.Status, res.Usage, res.Model)
			}
			checkRow(t, e.row(), c, tollgate.Generate, "chat", 502, 0, 0, 0)
			q := e.gw.Quota(k)
			if i64(q.RemainingRequests) != "3" || i64(q.RemainingTokens) != "1000" {
				t.Errorf("quota after a 502: requests %s tokens %s, want 3 and 1000 (nothing charged)", i64(q.RemainingRequests), i64(q.RemainingTokens))
			}
		})
	}
}

// An Ollama nobody listens for is backend_unreachable, recorded as a 502
// that costs nothing.
func TestGenerateBackendUnreachable(t *testing.T) {
	e := newEnv(t, withOllamaURL(ollamatest.RefusedURL(t)))
	k := key("key_unreach", tollgate.Limits{MonthlyRequests: 3})
	c := e.caller(k)
	res, err := e.gw.Generate(context.Background(), c, prompt("hello"), nil)
	checkCode(t, err, tollgate.CodeBackendUnreachable)
	if !strings.Contains(err.Error(), "not reachable") {
		t.Errorf("message %q does not say Ollama is not reachable", err)
	}
	if res.Status != 502 || res.Usage != (inference.Usage{}) {
		t.Errorf("result: status %d usage %+v, want 502 and nothing", res.Status, res.Usage)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 502, 0, 0, 0)
	if got := i64(e.gw.Quota(k).RemainingRequests); got != "3" {
		t.Errorf("remaining requests %s, want 3", got)
	}
}

// A stream Ollama cuts after k pieces reached the client is a 502 billed
// those k pieces as completion tokens (Ollama never sent its counts).
func TestGenerateStreamCutBillsDelivered(t *testing.T) {
	const k = 3
	e := newEnv(t, withFake(
		ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"a", "b", "c", "d", "e", "f"}, PromptEvalCount: 9}),
		ollamatest.WithFault(ollamatest.CutAfter(k))))
	c := e.caller(key("key_cut", tollgate.Limits{}))
	var got []string
	res, err := e.gw.Generate(context.Background(), c, prompt("letters"), func(s string) error {
		got = append(got, s)
		return nil
	})
	checkCode(t, err, tollgate.CodeBackendError)
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("pieces %q, want a b c", got)
	}
	if res.Status != 502 || res.Usage != (inference.Usage{CompletionTokens: k}) {
		t.Errorf("result: status %d usage %+v, want 502 and %d completion tokens", res.Status, res.Usage, k)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 502, 0, k, e.price("chat").Cost(0, k))
}

// A client that goes away mid-stream (onPiece fails) is a 499 billed the
// pieces it did receive, not the one that failed to reach it.
func TestGenerateStreamClientGoneBillsDelivered(t *testing.T) {
	const k = 2
	e := newEnv(t, withFake(ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"a", "b", "c", "d", "e", "f"}})))
	c := e.caller(key("key_gone", tollgate.Limits{}))
	calls := 0
	res, err := e.gw.Generate(context.Background(), c, prompt("letters"), func(string) error {
		calls++
		if calls > k {
			return errClientGone
		}
		return nil
	})
	checkCode(t, err, tollgate.CodeClientClosed)
	if !errors.Is(err, errClientGone) {
		t.Errorf("err %v does not wrap onPiece's error", err)
	}
	if res.Status != tollgate.StatusClientClosed || res.Usage != (inference.Usage{CompletionTokens: k}) {
		t.Errorf("result: status %d usage %+v, want 499 and %d completion tokens", res.Status, res.Usage, k)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 499, 0, k, e.price("chat").Cost(0, k))
}

// A caller whose context ends while Ollama is still working (non-streamed)
// is a 499 that bills nothing, and Ollama is told to stop.
func TestGenerateCanceledBillsNothing(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	e := newEnv(t, withFake(ollamatest.WithFault(ollamatest.Fault{Hold: hold})))
	c := e.caller(key("key_cancel", tollgate.Limits{MonthlyRequests: 5}))
	ctx, cancel := context.WithCancel(context.Background())
	type out struct {
		res gateway.GenerateResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := e.gw.Generate(ctx, c, prompt("think hard"), nil)
		done <- out{res, err}
	}()
	e.waitFake("the call to be held", func(s ollamatest.Stats) bool { return s.InFlight == 1 })
	cancel()
	o := <-done
	checkCode(t, o.err, tollgate.CodeClientClosed)
	if o.res.Status != 499 || o.res.Usage != (inference.Usage{}) || o.res.Text != "" {
		t.Errorf("result: status %d usage %+v text %q, want 499, nothing, no text", o.res.Status, o.res.Usage, o.res.Text)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 499, 0, 0, 0)
	e.waitFake("Ollama to see the client go", func(s ollamatest.Stats) bool { return s.Canceled == 1 })
}

// A stream Ollama ends cleanly after some text but without its final chunk
// is an answer: no error, done reason stopped_early, billed the pieces.
func TestGenerateStoppedEarlyBillsChunks(t *testing.T) {
	e := newEnv(t, withFake(
		ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"a", "b", "c", "d"}, PromptEvalCount: 6}),
		ollamatest.WithFault(ollamatest.EndAfter(2))))
	k := key("key_early", tollgate.Limits{})

	c := e.caller(k)
	var got []string
	res, err := e.gw.Generate(context.Background(), c, prompt("letters"), func(s string) error {
		got = append(got, s)
		return nil
	})
	if err != nil {
		t.Fatalf("streamed: %v", err)
	}
	if !slices.Equal(got, []string{"a", "b"}) || res.DoneReason != inference.DoneStoppedEarly || res.Status != 200 {
		t.Errorf("streamed: pieces %q done %q status %d, want [a b], %s, 200", got, res.DoneReason, res.Status, inference.DoneStoppedEarly)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 200, 0, 2, e.price("chat").Cost(0, 2))

	c2 := e.caller(k)
	res, err = e.gw.Generate(context.Background(), c2, prompt("letters"), nil)
	if err != nil {
		t.Fatalf("collected: %v", err)
	}
	if res.Text != "ab" || res.DoneReason != inference.DoneStoppedEarly || res.Usage != (inference.Usage{CompletionTokens: 2}) {
		t.Errorf("collected: text %q done %q usage %+v, want ab, %s, 0+2", res.Text, res.DoneReason, res.Usage, inference.DoneStoppedEarly)
	}
	checkRow(t, e.rows()[1], c2, tollgate.Generate, "chat", 200, 0, 2, e.price("chat").Cost(0, 2))
}

// When the usage record cannot be committed the answer is withheld: the
// call fails with metering_unavailable (503) whose message holds none of the
// answer, nothing is billed, the key's tokens-per-minute reservation comes
// back whole, and the log says so.
func TestGenerateRecordFailureWithholdsAnswer(t *testing.T) {
	e := newEnv(t,
		withFake(ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"the secret", " answer"}, PromptEvalCount: 7})),
		withRecorder(func(gateway.Recorder) gateway.Recorder { return failingRecorder{metering.ErrWithdrawn} }))
	k := key("key_withheld", tollgate.Limits{TokensPerMinute: 1000, MonthlyTokens: 5000})
	c := e.caller(k)
	res, err := e.gw.Generate(context.Background(), c, prompt("tell me"), nil)
	checkCode(t, err, tollgate.CodeMeteringUnavailable)
	if s := tollgate.ErrorCode(err).Status(); s != 503 {
		t.Errorf("status %d, want 503", s)
	}
	if tollgate.RetryAfter(err) <= 0 {
		t.Errorf("no Retry-After on %v", err)
	}
	for _, msg := range []string{err.Error(), tollgate.ErrorMessage(err)} {
		if strings.Contains(msg, "secret") || strings.Contains(msg, "answer\"") {
			t.Errorf("the error leaks the withheld answer: %q", msg)
		}
	}
	if res.Status != 503 || res.Usage != (inference.Usage{}) {
		t.Errorf("result: status %d usage %+v, want 503 and nothing billed", res.Status, res.Usage)
	}
	if res.Text != "" || res.DoneReason != "" {
		t.Errorf("result carries the withheld answer %q (%q): a caller that stores it would hand out what nobody paid for", res.Text, res.DoneReason)
	}
	e.noRows() // the fake recorder stored nothing
	st := e.gw.LimitState(k)
	if st.RemainingTokens != 1000 {
		t.Errorf("tokens per minute left %d, want the full 1000: the lease must settle at 0 tokens", st.RemainingTokens)
	}
	if got := i64(e.gw.Quota(k).RemainingTokens); got != "5000" {
		t.Errorf("monthly tokens left %s, want 5000", got)
	}
	lines := e.logs.lines(t, "usage not recorded")
	if len(lines) != 1 {
		t.Fatalf("log lines about the lost record: %d, want 1; log:\n%s", len(lines), e.logs.String())
	}
	l := lines[0]
	if msg := l["msg"].(string); !strings.Contains(msg, "withheld") || !strings.Contains(msg, "not billed") {
		t.Errorf("log message %q does not say the answer was withheld and not billed", msg)
	}
	if l["level"] != "ERROR" || l["request_id"] != c.RequestID || l["key_id"] != k.ID || l["withdrawn"] != true {
		t.Errorf("log line %v: want level ERROR, request_id %s, key_id %s, withdrawn true", l, c.RequestID, k.ID)
	}
	if strings.Contains(e.logs.String(), "secret") {
		t.Errorf("the log holds the answer:\n%s", e.logs.String())
	}
}

// While the usage record is being committed the call does not return (so
// no surface can release the answer), it keeps its GPU slot and its
// reservation, and the commit is not abandoned when the caller goes away.
func TestGenerateWaitsForTheRecord(t *testing.T) {
	var br *blockingRecorder
	e := newEnv(t, withSlots(1, 10*time.Millisecond),
		withRecorder(func(r gateway.Recorder) gateway.Recorder { br = newBlockingRecorder(r); return br }))
	defer br.unblock() // also when the test fails early
	a := key("key_wait", tollgate.Limits{MonthlyRequests: 10})
	ca := e.caller(a)
	ctx, cancel := context.WithCancel(context.Background())
	type out struct {
		res gateway.GenerateResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := e.gw.Generate(ctx, ca, prompt("hello"), nil)
		done <- out{res, err}
	}()
	b := <-br.entered
	if b.ev.RequestID != ca.RequestID || b.ev.Status != 200 || b.ev.TotalTokens() != 4 {
		t.Errorf("event being recorded: %+v", b.ev)
	}
	select {
	case o := <-done:
		t.Fatalf("Generate returned (%v) before its usage record was committed", o.err)
	default:
	}
	if g := e.inFlight.sum(); g != 1 {
		t.Errorf("in-flight gauge %d while recording, want 1", g)
	}
	if got := i64(e.gw.Quota(a).RemainingRequests); got != "10" {
		t.Errorf("remaining requests %s before the commit, want 10", got)
	}

	// The GPU slot is still held: another call is turned away.
	other := e.caller(key("key_other", tollgate.Limits{TokensPerMinute: 500}))
	otherDone := make(chan error, 1)
	go func() {
		_, err := e.gw.Generate(context.Background(), other, prompt("me too"), nil)
		otherDone <- err
	}()
	select {
	case err := <-otherDone:
		checkCode(t, err, tollgate.CodeOverloaded)
		otherDone = nil
	case b := <-br.entered:
		t.Errorf("a second call (%s) ran and reached the recorder while the first still held the only GPU slot", b.ev.RequestID)
	}

	// The caller hangs up; its record must still be committed.
	cancel()
	if b.ctx.Err() != nil {
		t.Errorf("the record's context ended with the caller's: %v", b.ctx.Err())
	}
	br.unblock()
	if otherDone != nil {
		<-otherDone
	}
	o := <-done
	if o.err != nil || o.res.Text != "Hello, world" {
		t.Fatalf("Generate after the commit: text %q err %v", o.res.Text, o.err)
	}
	checkRow(t, e.row(), ca, tollgate.Generate, "chat", 200, 1, 3, e.price("chat").Cost(1, 3))
	if got := i64(e.gw.Quota(a).RemainingRequests); got != "9" {
		t.Errorf("remaining requests %s after the commit, want 9", got)
	}
	if g := e.inFlight.sum(); g != 0 {
		t.Errorf("in-flight gauge %d at the end, want 0", g)
	}
}

// stallingStore holds every InsertEvents until release is closed, before
// the real store takes its lock: a database whose write lock another
// writer holds.
type stallingStore struct {
	next    metering.BatchStore
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallingStore) unstall() { s.once.Do(func() { close(s.release) }) }

func (s *stallingStore) InsertEvents(ctx context.Context, evs []metering.Event, claim func()) ([]bool, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return s.next.InsertEvents(ctx, evs, claim)
}

// A commit slower than the record timeout withholds the answer (503) and
// bills nothing, also once the stalled commit goes through later: the row
// is stored in its withdrawn form (503, no tokens, no cost) and the key's
// quota counts nothing.
func TestGenerateLateCommitIsWithdrawnNotBilled(t *testing.T) {
	st := &stallingStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	e := newEnv(t, withRecordTimeout(20*time.Millisecond),
		withStore(func(s metering.BatchStore) metering.BatchStore { st.next = s; return st }))
	defer st.unstall() // also when the test fails early: the recorder's Close waits for the store
	k := key("key_late", tollgate.Limits{MonthlyRequests: 10, MonthlyTokens: 1000, TokensPerMinute: 600})
	c := e.caller(k)
	res, err := e.gw.Generate(context.Background(), c, prompt("hello"), nil)
	checkCode(t, err, tollgate.CodeMeteringUnavailable)
	if res.Status != 503 || res.Usage != (inference.Usage{}) {
		t.Errorf("result: status %d usage %+v, want 503 and nothing", res.Status, res.Usage)
	}
	if l := e.logs.lines(t, "usage not recorded"); len(l) != 1 || l[0]["withdrawn"] != true {
		t.Errorf("log lines about the withdrawn record: %v", l)
	}
	if st := e.gw.LimitState(k); st.RemainingTokens != 600 {
		t.Errorf("tokens per minute left %d, want all 600 back", st.RemainingTokens)
	}
	<-st.entered
	st.unstall()
	if err := e.recorder.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", metering.WithdrawnStatus, 0, 0, 0)
	q := e.gw.Quota(k)
	if i64(q.RemainingRequests) != "10" || i64(q.RemainingTokens) != "1000" {
		t.Errorf("quota after a withheld answer: requests %s tokens %s, want 10 and 1000", i64(q.RemainingRequests), i64(q.RemainingTokens))
	}
}
