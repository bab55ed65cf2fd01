package limits_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/limits"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ctx = context.Background()
)

// ledger is a fake limits.Ledger the tests control: what the metering
// commit would have counted for each key this month.
type ledger struct {
	mu           sync.Mutex
	reqs, tokens map[string]int64
	calls        int64 // times Used was called
}

func newLedger() *ledger {
	return &ledger{reqs: map[string]int64{}, tokens: map[string]int64{}}
}

func (l *ledger) Used(keyID string) (requests, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	return l.reqs[keyID], l.tokens[keyID]
}

// commit records one request that used tokens, as the usage commit does
// before the lease is settled.
func (l *ledger) commit(keyID string, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs[keyID]++
	l.tokens[keyID] += tokens
}

// set puts a key's month usage at requests and tokens.
func (l *ledger) set(keyID string, requests, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs[keyID], l.tokens[keyID] = requests, tokens
}

func (l *ledger) used(keyID string) (requests, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs[keyID], l.tokens[keyID]
}

// rq is a request for key with lim at now asking for nothing but a slot.
func rq(key string, lim tollgate.Limits, now time.Time) limits.Request {
	return limits.Request{KeyID: key, Limits: lim, Now: now}
}

// rqTokens is a request with a prompt bound and an output cap.
func rqTokens(key string, lim tollgate.Limits, prompt, output, minOutput int64, now time.Time) limits.Request {
	return limits.Request{KeyID: key, Limits: lim, Prompt: prompt, Output: output, MinOutput: minOutput, Now: now}
}

func mustAdmit(t *testing.T, l *limits.Limiter, r limits.Request) limits.Lease {
	t.Helper()
	ls, err := l.Admit(ctx, r)
	if err != nil {
		t.Fatalf("Admit(%+v) refused: %v", r, err)
	}
	if ls == nil {
		t.Fatalf("Admit(%+v) returned a nil lease and no error", r)
	}
	return ls
}

func settle(t *testing.T, ls limits.Lease, tokens int64, now time.Time) {
	t.Helper()
	if err := ls.Settle(ctx, limits.Settlement{Tokens: tokens, Now: now}); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

// refusalProblem says what is wrong with err as a refusal with code and
// finality final, or "" when nothing is. It is safe to use off the test
// goroutine.
func refusalProblem(ls limits.Lease, err error, code tollgate.Code, final bool) string {
	var e *tollgate.Error
	switch {
	case err == nil:
		return "admitted, want a refusal " + string(code)
	case ls != nil:
		return "a refusal came with a lease"
	case !errors.As(err, &e):
		return fmt.Sprintf("refusal %T %v is not a *tollgate.Error", err, err)
	case e.Code != code:
		return fmt.Sprintf("refusal code %s (%v), want %s", e.Code, err, code)
	case e.Final != final:
		return fmt.Sprintf("refusal %s Final=%v, want %v", e.Code, e.Final, final)
	case final && e.RetryAfter != 0:
		return fmt.Sprintf("final refusal %s has RetryAfter %v", e.Code, e.RetryAfter)
	case !final && e.RetryAfter <= 0:
		return fmt.Sprintf("refusal %s has no RetryAfter", e.Code)
	}
	return ""
}

// refusalEither is refusalProblem for a refusal that may or may not be
// final: requests in flight may still give their share of a quota back.
func refusalEither(ls limits.Lease, err error, code tollgate.Code) string {
	var e *tollgate.Error
	return refusalProblem(ls, err, code, errors.As(err, &e) && e.Final)
}

// wantRefusal admits r and fails unless it is refused with code (Final
// when final); it returns the refusal.
func wantRefusal(t *testing.T, l *limits.Limiter, r limits.Request, code tollgate.Code, final bool) *tollgate.Error {
	t.Helper()
	ls, err := l.Admit(ctx, r)
	if p := refusalProblem(ls, err, code, final); p != "" {
		t.Fatalf("Admit(%+v): %s", r, p)
	}
	var e *tollgate.Error
	errors.As(err, &e)
	return e
}

// admitN admits n requests of key at now, settling each at once.
func admitN(l *limits.Limiter, key string, lim tollgate.Limits, n int, now time.Time) (ok int, last error) {
	for i := 0; i < n; i++ {
		ls, err := l.Admit(ctx, rq(key, lim, now))
		if err != nil {
			last = err
			continue
		}
		ok++
		_ = ls.Settle(ctx, limits.Settlement{Now: now})
	}
	return ok, last
}

var leftRE = regexp.MustCompile(`only (\d+) tokens of this key's monthly token quota are left`)

// tokensLeft reads what remains of key's monthly token quota at now
// without taking anything: a prompt bigger than the whole quota is refused
// with a message saying how much is left (or that it is used up).
func tokensLeft(t *testing.T, l *limits.Limiter, key string, lim tollgate.Limits, now time.Time) int64 {
	t.Helper()
	e := wantRefusal(t, l, rqTokens(key, lim, lim.MonthlyTokens+1, 0, 0, now), tollgate.CodeQuotaExceeded, true)
	if strings.Contains(e.Message, "monthly token quota ("+strconv.FormatInt(lim.MonthlyTokens, 10)+" tokens) is used up") {
		return 0
	}
	m := leftRE.FindStringSubmatch(e.Message)
	if m == nil {
		t.Fatalf("quota refusal does not say what is left: %q", e.Message)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func TestLimiterRequestBucket(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{RequestsPerSecond: 2, Burst: 4}
	ok, err := admitN(l, "k", lim, 10, t0)
	if p := refusalProblem(nil, err, tollgate.CodeRateLimited, false); ok != 4 || p != "" {
		t.Fatalf("burst of 10 at one instant: %d admitted, last refusal %v (%s); want 4 and rate_limited", ok, err, p)
	}
	if ra := tollgate.RetryAfter(err); ra != 500*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 500ms (one token at 2/s)", ra)
	}
	if msg := err.Error(); !strings.Contains(msg, "retry in 1 s") {
		t.Fatalf("message %q: 500ms must round up to 1 s", msg)
	}
	// Just before the refill: still refused. At it: admitted. Never early.
	wantRefusal(t, l, rq("k", lim, t0.Add(499*time.Millisecond)), tollgate.CodeRateLimited, false)
	mustAdmit(t, l, rq("k", lim, t0.Add(500*time.Millisecond)))
	// Another key is independent.
	if ok, _ := admitN(l, "other", lim, 4, t0); ok != 4 {
		t.Fatalf("a quiet key got %d of 4", ok)
	}
}

// Retry-After of a rate refusal is never earlier than the bucket refills,
// whatever the rate (at rates that do not divide a second evenly too), and
// the message rounds it up to whole seconds.
func TestLimiterRequestRetryAfterNeverEarly(t *testing.T) {
	for _, rps := range []float64{2, 3, 7, 0.3, 1.0 / 3, 1000} {
		l := limits.New(nil, 0)
		lim := tollgate.Limits{RequestsPerSecond: rps, Burst: 1}
		mustAdmit(t, l, rq("k", lim, t0))
		e := wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeRateLimited, false)
		want := time.Duration(float64(time.Second) / rps)
		if e.RetryAfter < want-time.Microsecond || e.RetryAfter > want+time.Millisecond {
			t.Errorf("rps %v: RetryAfter %v, want about %v", rps, e.RetryAfter, want)
		}
		secs := int(e.RetryAfter / time.Second)
		if e.RetryAfter%time.Second != 0 || secs == 0 {
			secs++
		}
		if !strings.Contains(e.Message, fmt.Sprintf("retry in %d s", secs)) {
			t.Errorf("rps %v: message %q, want it to say retry in %d s", rps, e.Message, secs)
		}
		if e.RetryAfter > time.Millisecond {
			wantRefusal(t, l, rq("k", lim, t0.Add(e.RetryAfter-time.Millisecond)), tollgate.CodeRateLimited, false)
		}
		if _, err := l.Admit(ctx, rq("k", lim, t0.Add(e.RetryAfter))); err != nil {
			t.Errorf("rps %v: refused at the promised time t0+%v: %v", rps, e.RetryAfter, err)
		}
	}
}

// Semantics changed: the old limiter charged tokens per minute only after
// the response, so one request could overshoot the allowance and put the
// key in debt. Admission now reserves the prompt bound plus the granted
// output (lowered to what the bucket holds) and Settle refunds it to the
// real count, so only a settlement above the reservation can leave a debt.
// The debt arithmetic (and its Retry-After) is the old test's.
func TestLimiterTokensPerMinuteReserves(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{TokensPerMinute: 600} // 10 tokens/s
	a := mustAdmit(t, l, rqTokens("k", lim, 100, 500, 1, t0))
	if a.Output() != 500 || a.Lowered() {
		t.Fatalf("first request: output %d lowered %v; want 500, not lowered", a.Output(), a.Lowered())
	}
	// The whole allowance is reserved: nothing else fits until it refills.
	e := wantRefusal(t, l, rqTokens("k", lim, 100, 500, 1, t0), tollgate.CodeTokensPerMinute, false)
	if e.RetryAfter != 10100*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 10.1s (101 tokens at 10/s)", e.RetryAfter)
	}
	if !strings.Contains(e.Message, "retry in 11 s") {
		t.Fatalf("message %q: 10.1 s must round up to 11 s", e.Message)
	}
	wantRefusal(t, l, rqTokens("k", lim, 100, 500, 1, t0.Add(10099*time.Millisecond)), tollgate.CodeTokensPerMinute, false)
	b := mustAdmit(t, l, rqTokens("k", lim, 100, 500, 1, t0.Add(10100*time.Millisecond)))
	if b.Output() != 1 || !b.Lowered() {
		t.Fatalf("request at the refill: output %d lowered %v; want 1 (what had refilled), lowered", b.Output(), b.Lowered())
	}
	settle(t, b, 101, t0.Add(10100*time.Millisecond))

	// A settlement above the reservation leaves a debt: a reserved 600,
	// really used 900.
	settle(t, a, 900, t0.Add(10100*time.Millisecond))
	// The bucket held 0 at 10.1s; the debt is 300, paid back at 10/s.
	e = wantRefusal(t, l, rqTokens("k", lim, 1, 0, 0, t0.Add(10100*time.Millisecond)), tollgate.CodeTokensPerMinute, false)
	if e.RetryAfter != 30100*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 30.1s (301 tokens at 10/s)", e.RetryAfter)
	}
	if st := l.State("k", lim, t0.Add(10100*time.Millisecond)); st.RemainingTokens != 0 || st.ResetTokens != 90*time.Second {
		t.Fatalf("state in debt %+v; want 0 remaining, full in 90s", st)
	}
	wantRefusal(t, l, rqTokens("k", lim, 1, 0, 0, t0.Add(40*time.Second)), tollgate.CodeTokensPerMinute, false)
	end := t0.Add(40200 * time.Millisecond)
	if st := l.State("k", lim, end); st.RemainingTokens != 1 || st.ResetTokens <= 0 {
		t.Fatalf("state after paying back %+v; want 1 token left", st)
	}
	mustAdmit(t, l, rqTokens("k", lim, 1, 0, 0, end))
}

func TestLimiterConcurrency(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{MaxConcurrent: 2}
	a := mustAdmit(t, l, rq("k", lim, t0))
	mustAdmit(t, l, rq("k", lim, t0))
	e := wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeTooManyConcurrent, false)
	if e.RetryAfter != time.Second {
		t.Fatalf("RetryAfter %v, want 1s", e.RetryAfter)
	}
	settle(t, a, 0, t0)
	mustAdmit(t, l, rq("k", lim, t0))
	wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeTooManyConcurrent, false)
}

func TestLimiterLimitsChangeWithoutRestart(t *testing.T) {
	l := limits.New(nil, 0)
	slow := tollgate.Limits{RequestsPerSecond: 1, Burst: 1}
	if ok, _ := admitN(l, "k", slow, 5, t0); ok != 1 {
		t.Fatalf("slow plan admitted %d", ok)
	}
	fast := tollgate.Limits{RequestsPerSecond: 100, Burst: 50}
	if ok, _ := admitN(l, "k", fast, 50, t0); ok != 50 {
		t.Fatalf("after an upgrade admitted %d of 50", ok)
	}
	if ok, _ := admitN(l, "k", tollgate.Limits{}, 1000, t0); ok != 1000 {
		t.Fatalf("unlimited key refused")
	}
	// A downgrade applies at once too.
	if ok, _ := admitN(l, "k", slow, 5, t0); ok != 1 {
		t.Fatalf("after a downgrade admitted %d, want 1", ok)
	}
}

func TestLimiterState(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{RequestsPerSecond: 1, Burst: 10, TokensPerMinute: 1000}
	st := l.State("new", lim, t0)
	if st.RemainingReqs != 10 || st.RemainingTokens != 1000 || st.Limits != lim {
		t.Fatalf("fresh state %+v", st)
	}
	admitN(l, "new", lim, 3, t0)
	st = l.State("new", lim, t0)
	if st.RemainingReqs != 7 || st.ResetReqs != 3*time.Second {
		t.Fatalf("after 3 requests %+v; want 7 left, full in 3s", st)
	}
	// A reservation shows in the token headers while it is held...
	ls := mustAdmit(t, l, rqTokens("new", lim, 100, 150, 1, t0))
	st = l.State("new", lim, t0)
	if st.RemainingReqs != 6 || st.RemainingTokens != 750 || st.ResetTokens != 15*time.Second {
		t.Fatalf("with 250 tokens reserved %+v; want 6 requests, 750 tokens left, full in 15s", st)
	}
	// ...and only what was used stays spent after Settle.
	settle(t, ls, 40, t0)
	if st = l.State("new", lim, t0); st.RemainingTokens != 960 || st.ResetTokens != 2400*time.Millisecond {
		t.Fatalf("after settling 40 tokens %+v; want 960 left, full in 2.4s", st)
	}
	// Under other limits than those it holds, a key reads as fresh.
	other := tollgate.Limits{RequestsPerSecond: 5, TokensPerMinute: 50}
	if st = l.State("new", other, t0); st.RemainingReqs != 5 || st.RemainingTokens != 50 {
		t.Fatalf("state under new limits %+v; want full buckets", st)
	}
}

func TestLimiterDropsIdleKeys(t *testing.T) {
	l := limits.New(nil, 100)
	lim := tollgate.Limits{RequestsPerSecond: 1, Burst: 1}
	for i := 0; i < 10_000; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		ls := mustAdmit(t, l, rq(fmt.Sprint("key", i), lim, now))
		settle(t, ls, 0, now)
		if n := l.Len(); n > 101 {
			t.Fatalf("after %d keys the limiter holds %d; idle ones must be dropped (limit 100)", i+1, n)
		}
	}
}

// A concurrent burst never admits more than the bucket holds.
func TestLimiterConcurrentBurst(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{RequestsPerSecond: 1, Burst: 25, MaxConcurrent: 1000}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		ok    int
		start = make(chan struct{})
	)
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 10; i++ {
				ls, err := l.Admit(ctx, rq("k", lim, t0))
				if err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
					continue // held: a slot stays taken
				}
				if p := refusalProblem(ls, err, tollgate.CodeRateLimited, false); p != "" {
					t.Error(p)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok != 25 {
		t.Fatalf("500 concurrent attempts admitted %d, want exactly the burst of 25", ok)
	}
}

// A bucket that takes longer to refill than a Duration can hold (a rate
// far below tollgate.MinRequestsPerSecond, kept from before that minimum)
// reports the longest Duration, not a negative one, and BurstReqs is the
// bucket's size however many requests are left.
func TestLimiterStateSaturates(t *testing.T) {
	l := limits.New(nil, 0)
	glacial := tollgate.Limits{RequestsPerSecond: 1e-20}
	admitN(l, "k", glacial, 1, t0)
	if st := l.State("k", glacial, t0); st.ResetReqs != time.Duration(math.MaxInt64) || st.BurstReqs != 1 || st.RemainingReqs != 0 {
		t.Errorf("state %+v; want the longest Duration to refill a bucket of 1", st)
	}
	unset := tollgate.Limits{RequestsPerSecond: 2.5}
	admitN(l, "u", unset, 2, t0)
	if st := l.State("u", unset, t0); st.BurstReqs != 3 || st.RemainingReqs != 1 {
		t.Errorf("state %+v; want a bucket of 3 (rate rounded up) with 1 left", st)
	}
}
