package limits_test

import (
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/limits"
)

// The guarantees of admission by reservation: what is committed plus what
// is in flight never exceeds a limit, however requests interleave. Each
// request is modelled as the gateway runs it: Admit, then (admitted) the
// usage commit adds to the Ledger, then Settle.

// hammer runs n goroutines released together, each running body until it
// returns false or attempts calls have been made.
func hammer(n, attempts int, body func(g, i int) bool) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < attempts && body(g, i); i++ {
				runtime.Gosched()
			}
		}()
	}
	close(start)
	wg.Wait()
}

// 50 goroutines race for a quota of 100 requests: exactly 100 are
// admitted and committed, and every other attempt is a final 402.
func TestMonthlyRequestsNeverExceeded(t *testing.T) {
	led := newLedger()
	l := limits.New(led, 0)
	lim := tollgate.Limits{MonthlyRequests: 100}
	var (
		mu                 sync.Mutex
		admitted, refusals int
	)
	hammer(50, 10_000, func(g, i int) bool {
		ls, err := l.Admit(ctx, rq("k", lim, t0))
		if err != nil {
			if p := refusalEither(ls, err, tollgate.CodeQuotaExceeded); p != "" {
				t.Error(p)
				return false
			}
			mu.Lock()
			refusals++
			mu.Unlock()
			// Stop once the quota is really spent; before that a refusal
			// can only come from requests still in flight.
			reqs, _ := led.used("k")
			return reqs < lim.MonthlyRequests
		}
		mu.Lock()
		admitted++
		mu.Unlock()
		runtime.Gosched() // let others in while this one is in flight
		led.commit("k", 0)
		if reqs, _ := led.used("k"); reqs > lim.MonthlyRequests {
			t.Errorf("%d requests committed against a quota of %d", reqs, lim.MonthlyRequests)
		}
		if err := ls.Settle(ctx, limits.Settlement{Now: t0}); err != nil {
			t.Error(err)
		}
		return true
	})
	reqs, _ := led.used("k")
	if admitted != 100 || reqs != 100 {
		t.Fatalf("%d admitted, %d committed; want exactly 100 of each", admitted, reqs)
	}
	if refusals < 50 {
		t.Fatalf("only %d refusals: every goroutine must have been refused once the quota was spent", refusals)
	}
	e := wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, true)
	if !strings.Contains(e.Message, "monthly request quota (100 requests) is used up") ||
		!strings.Contains(e.Message, "2026-04-01T00:00:00Z") {
		t.Fatalf("message %q must name the quota and its reset", e.Message)
	}
}

// Requests in flight hold their place in the request quota until settled;
// a settled request that was never committed gives it back.
func TestMonthlyRequestsReservedInFlight(t *testing.T) {
	led := newLedger()
	l := limits.New(led, 0)
	lim := tollgate.Limits{MonthlyRequests: 3}
	led.set("k", 1, 0)
	a := mustAdmit(t, l, rq("k", lim, t0))
	b := mustAdmit(t, l, rq("k", lim, t0))
	wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, false) // 1 committed + 2 in flight: not final
	led.commit("k", 0)
	settle(t, a, 0, t0)
	wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, false) // 2 committed + 1 in flight
	settle(t, b, 0, t0)                                                    // b failed before billing: not committed
	c := mustAdmit(t, l, rq("k", lim, t0))
	wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, false)
	led.commit("k", 0)
	settle(t, c, 0, t0)
	wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, true) // 3 committed
	if reqs, _ := led.used("k"); reqs != 3 {
		t.Fatalf("%d committed, want 3", reqs)
	}
}

// 50 goroutines share a quota of 100 tokens with requests that may use 10
// prompt tokens and 20 output tokens. Whatever the interleaving, what is
// committed plus what admitted requests may still use never exceeds 100 (so
// the ledger cannot, even if every request used all it was granted), the
// output cap is lowered near the end, and a request that cannot fit is a
// final 402 that says how many tokens are left.
func TestMonthlyTokensNeverExceeded(t *testing.T) {
	const (
		quota               = 100
		prompt, out, minOut = 10, 20, 1
	)
	led := newLedger()
	l := limits.New(led, 0)
	lim := tollgate.Limits{MonthlyTokens: quota}
	var (
		mu                               sync.Mutex
		granted                          int64 // tokens admitted requests may still use, not yet committed
		admitted, lowered, short, usedUp int
		rngs                             = make([]*rand.Rand, 50)
	)
	for g := range rngs {
		rngs[g] = rand.New(rand.NewSource(int64(g)))
	}
	hammer(50, 10_000, func(g, i int) bool {
		ls, err := l.Admit(ctx, rqTokens("k", lim, prompt, out, minOut, t0))
		if err != nil {
			if p := refusalEither(ls, err, tollgate.CodeQuotaExceeded); p != "" {
				t.Error(p)
				return false
			}
			mu.Lock()
			if m := leftRE.FindStringSubmatch(err.Error()); m != nil {
				short++
				var left int64
				fmt.Sscan(m[1], &left)
				if left < 1 || left >= prompt+minOut {
					t.Errorf("refused saying %d tokens are left; a request needing %d fits in %d or more", left, prompt+minOut, prompt+minOut)
				}
			} else if strings.Contains(err.Error(), "is used up") {
				usedUp++
			} else {
				t.Errorf("quota refusal says neither what is left nor that it is used up: %q", err)
			}
			mu.Unlock()
			// Stop once no request can fit even with nothing in flight.
			_, tokens := led.used("k")
			return quota-tokens >= prompt+minOut
		}
		o := ls.Output()
		mu.Lock()
		admitted++
		if o < minOut || o > out || ls.Lowered() != (o < out) {
			t.Errorf("granted output %d lowered %v; want %d..%d, lowered when under %d", o, ls.Lowered(), minOut, out, out)
		}
		if ls.Lowered() {
			lowered++
		}
		granted += prompt + o
		if _, tokens := led.used("k"); tokens+granted > quota {
			t.Errorf("%d committed + %d granted to requests in flight > quota %d", tokens, granted, quota)
		}
		mu.Unlock()
		runtime.Gosched()
		// The request really uses its prompt and some of its output. At
		// most 5 output tokens, so the run provably goes through the range
		// where the cap must be lowered (with up to 20 it may jump past it).
		used := prompt + min(o, rngs[g].Int63n(6))
		mu.Lock()
		granted -= prompt + o
		led.commit("k", used)
		mu.Unlock()
		if err := ls.Settle(ctx, limits.Settlement{Tokens: used, Now: t0}); err != nil {
			t.Error(err)
		}
		return true
	})
	_, tokens := led.used("k")
	t.Logf("%d admitted (%d with a lowered cap), %d refused short, %d refused used up; %d tokens committed", admitted, lowered, short, usedUp, tokens)
	if tokens > quota || quota-tokens >= prompt+minOut {
		t.Fatalf("%d tokens committed; want the quota of %d spent to less than %d", tokens, quota, prompt+minOut)
	}
	if lowered == 0 {
		t.Fatal("no admitted request had its output cap lowered near the end of the quota")
	}
	// Quiet now: what the refusal says is left is exactly what is left.
	left := int64(quota) - tokens
	e := wantRefusal(t, l, rqTokens("k", lim, prompt, out, minOut, t0), tollgate.CodeQuotaExceeded, true)
	if left > 0 {
		want := fmt.Sprintf("may use up to %d tokens (its prompt plus the template's overhead) but only %d tokens of this key's monthly token quota are left", prompt+minOut, left)
		if !strings.Contains(e.Message, want) {
			t.Fatalf("message %q, want it to say %q", e.Message, want)
		}
		// What is left still serves a request that fits.
		ls := mustAdmit(t, l, rqTokens("k", lim, left-1, out, minOut, t0))
		if ls.Output() != 1 || !ls.Lowered() {
			t.Fatalf("last request: output %d lowered %v; want 1, lowered", ls.Output(), ls.Lowered())
		}
		settle(t, ls, 0, t0)
	}
}

// Exactly at the boundary of the token quota.
func TestMonthlyTokensBoundary(t *testing.T) {
	led := newLedger()
	l := limits.New(led, 0)
	lim := tollgate.Limits{MonthlyTokens: 100}

	led.set("k", 7, 100) // spent exactly
	e := wantRefusal(t, l, rqTokens("k", lim, 10, 20, 1, t0), tollgate.CodeQuotaExceeded, true)
	if !strings.Contains(e.Message, "monthly token quota (100 tokens) is used up") {
		t.Fatalf("message %q", e.Message)
	}
	wantRefusal(t, l, rqTokens("k", lim, 0, 0, 0, t0), tollgate.CodeQuotaExceeded, true) // even an empty request
	led.set("k", 7, 130)                                                                 // overshot (a settlement above its bound)
	wantRefusal(t, l, rqTokens("k", lim, 0, 0, 0, t0), tollgate.CodeQuotaExceeded, true)

	led.set("k", 7, 90) // 10 left: a request needing 11 is refused, saying so
	e = wantRefusal(t, l, rqTokens("k", lim, 10, 20, 1, t0), tollgate.CodeQuotaExceeded, true)
	if !strings.Contains(e.Message, "up to 11 tokens") || !strings.Contains(e.Message, "only 10 tokens") {
		t.Fatalf("message %q must say 11 needed, 10 left", e.Message)
	}

	led.set("k", 7, 89) // 11 left: exactly the prompt plus the least output
	ls := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
	if ls.Output() != 1 || !ls.Lowered() {
		t.Fatalf("at 11 left: output %d lowered %v; want 1, lowered", ls.Output(), ls.Lowered())
	}
	if n := tokensLeft(t, l, "k", lim, t0); n != 0 {
		t.Fatalf("%d tokens left with the last 11 reserved", n)
	}
	wantRefusal(t, l, rqTokens("k", lim, 0, 0, 0, t0), tollgate.CodeQuotaExceeded, false) // the last 11 are reserved in flight, not spent
	led.commit("k", 11)
	settle(t, ls, 11, t0)

	led.set("k", 7, 88) // 12 left
	ls = mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
	if ls.Output() != 2 || !ls.Lowered() {
		t.Fatalf("at 12 left: output %d lowered %v; want 2, lowered", ls.Output(), ls.Lowered())
	}
	settle(t, ls, 0, t0)

	led.set("k", 7, 70) // 30 left: the request fits whole
	ls = mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
	if ls.Output() != 20 || ls.Lowered() {
		t.Fatalf("at 30 left: output %d lowered %v; want 20, not lowered", ls.Output(), ls.Lowered())
	}
	settle(t, ls, 0, t0)

	// An output that cannot be cut (MinOutput == Output) is all or nothing.
	led.set("k", 7, 71)
	wantRefusal(t, l, rqTokens("k", lim, 10, 20, 20, t0), tollgate.CodeQuotaExceeded, true)
}

// 50 goroutines at one instant against 100 tokens per minute: what is
// granted never exceeds the allowance; time refills it at its rate; a
// refusal's Retry-After is exactly when the request fits, never earlier.
func TestTokensPerMinuteNeverExceeded(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{TokensPerMinute: 100}
	var (
		mu       sync.Mutex
		granted  int64
		admitted int
		lowered  int
		retry    = map[time.Duration]int{}
	)
	hammer(50, 1, func(g, i int) bool {
		ls, err := l.Admit(ctx, rqTokens("k", lim, 10, 25, 1, t0))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if p := refusalProblem(ls, err, tollgate.CodeTokensPerMinute, false); p != "" {
				t.Error(p)
			}
			retry[tollgate.RetryAfter(err)]++
			return false
		}
		admitted++
		granted += 10 + ls.Output()
		if ls.Lowered() {
			lowered++
		}
		return false // held: nothing is settled within the minute
	})
	// Every request is the same, so the outcome is too: 35 + 35 + 30.
	if granted > 100 || admitted != 3 || lowered != 1 {
		t.Fatalf("%d admitted (%d lowered) granted %d tokens; want 3 (1 lowered) granting 100 of 100", admitted, lowered, granted)
	}
	// 11 tokens (the prompt and one output token) at 100/min: 6.6 s.
	if len(retry) != 1 || retry[6600*time.Millisecond] != 47 {
		t.Fatalf("Retry-After of the 47 refusals: %v; want 6.6s for each", retry)
	}
	if st := l.State("k", lim, t0); st.RemainingTokens != 0 || st.ResetTokens != time.Minute {
		t.Fatalf("state %+v; want empty, full in 1m", st)
	}
	// 6 s later, 10 tokens have come back: not yet enough for 11.
	at := t0.Add(6 * time.Second)
	if st := l.State("k", lim, at); st.RemainingTokens != 10 || st.ResetTokens != 54*time.Second {
		t.Fatalf("state 6s later %+v; want 10 tokens, full in 54s", st)
	}
	e := wantRefusal(t, l, rqTokens("k", lim, 10, 25, 1, at), tollgate.CodeTokensPerMinute, false)
	if e.RetryAfter != 600*time.Millisecond {
		t.Fatalf("RetryAfter at 6s: %v, want 600ms (one token at 100/min)", e.RetryAfter)
	}
	wantRefusal(t, l, rqTokens("k", lim, 10, 25, 1, t0.Add(6599*time.Millisecond)), tollgate.CodeTokensPerMinute, false)
	ls := mustAdmit(t, l, rqTokens("k", lim, 10, 25, 1, t0.Add(6600*time.Millisecond)))
	if ls.Output() != 1 || !ls.Lowered() {
		t.Fatalf("admitted at the promised time with output %d lowered %v; want 1, lowered", ls.Output(), ls.Lowered())
	}
	// A smaller request that fits what has come back takes all of it.
	ls = mustAdmit(t, l, rqTokens("k", lim, 2, 25, 0, t0.Add(7800*time.Millisecond)))
	if ls.Output() != 0 || !ls.Lowered() {
		t.Fatalf("output %d lowered %v; want 0 (2 tokens back, 2 of prompt)", ls.Output(), ls.Lowered())
	}
}

// Retry-After of a tokens-per-minute refusal is never earlier than the
// bucket holds the request, over many shapes of drain and refill.
func TestTokensPerMinuteRetryAfterNeverEarly(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 2000; i++ {
		tpm := int64(1 + rng.Intn(600))
		lim := tollgate.Limits{TokensPerMinute: tpm}
		l := limits.New(nil, 0)
		now := t0
		for j := 0; j < 3; j++ { // drain and partly refund, at whole seconds
			p := 1 + rng.Int63n(tpm)
			if ls, err := l.Admit(ctx, rqTokens("k", lim, p, 0, 0, now)); err == nil {
				settle(t, ls, rng.Int63n(p+1), now)
			}
			now = now.Add(time.Duration(rng.Intn(4)) * time.Second)
		}
		need := 1 + rng.Int63n(tpm)
		_, err := l.Admit(ctx, rqTokens("k", lim, need, 0, 0, now))
		if err == nil {
			continue
		}
		ra := tollgate.RetryAfter(err)
		if p := refusalProblem(nil, err, tollgate.CodeTokensPerMinute, false); p != "" || ra > time.Minute {
			t.Fatalf("TPM %d need %d: %s RetryAfter %v", tpm, need, p, ra)
		}
		if _, err := l.Admit(ctx, rqTokens("k", lim, need, 0, 0, now.Add(ra))); err != nil {
			t.Fatalf("TPM %d need %d: refused again at the promised +%v: %v", tpm, need, ra, err)
		}
	}
}

// A request that could not fit even in a full bucket is refused as final
// (waiting cannot help), and takes nothing; one that just fits is admitted.
func TestTokensPerMinuteNeverFits(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{TokensPerMinute: 100}
	e := wantRefusal(t, l, rqTokens("k", lim, 95, 20, 6, t0), tollgate.CodeTokensPerMinute, true)
	if !strings.Contains(e.Message, "up to 101 tokens") || !strings.Contains(e.Message, "100 tokens per minute") {
		t.Fatalf("message %q must say 101 needed, 100 per minute", e.Message)
	}
	if st := l.State("k", lim, t0); st.RemainingTokens != 100 {
		t.Fatalf("a refused request took tokens: %+v", st)
	}
	ls := mustAdmit(t, l, rqTokens("k", lim, 95, 20, 5, t0))
	if ls.Output() != 5 || !ls.Lowered() {
		t.Fatalf("output %d lowered %v; want 5, lowered", ls.Output(), ls.Lowered())
	}
	// Empty bucket: a request that can never fit is still final, not "retry".
	wantRefusal(t, l, rqTokens("k", lim, 101, 0, 0, t0), tollgate.CodeTokensPerMinute, true)
	wantRefusal(t, l, rqTokens("k", lim, 100, 0, 0, t0), tollgate.CodeTokensPerMinute, false)
}

// Settle gives back what a request reserved and did not use, to the token
// bucket and to the monthly quotas; a second Settle changes nothing.
func TestSettleRefunds(t *testing.T) {
	t.Run("tokens per minute", func(t *testing.T) {
		l := limits.New(nil, 0)
		lim := tollgate.Limits{TokensPerMinute: 100, MaxConcurrent: 2}
		a := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
		b := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
		if st := l.State("k", lim, t0); st.RemainingTokens != 40 {
			t.Fatalf("with 60 reserved: %d left, want 40", st.RemainingTokens)
		}
		settle(t, a, 12, t0) // reserved 30, used 12: 18 back
		if st := l.State("k", lim, t0); st.RemainingTokens != 58 {
			t.Fatalf("after settling 12 of 30: %d left, want 58", st.RemainingTokens)
		}
		settle(t, a, 0, t0) // no-op: must not give back b's reservation nor free its slot
		if st := l.State("k", lim, t0); st.RemainingTokens != 58 {
			t.Fatalf("a second Settle changed the bucket: %d left, want 58", st.RemainingTokens)
		}
		c := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
		wantRefusal(t, l, rqTokens("k", lim, 0, 0, 0, t0), tollgate.CodeTooManyConcurrent, false) // b and c in flight
		settle(t, b, 30, t0)
		settle(t, c, 0, t0)
		if st := l.State("k", lim, t0); st.RemainingTokens != 58 {
			t.Fatalf("after b used all and c nothing: %d left, want 58", st.RemainingTokens)
		}
	})
	t.Run("monthly tokens", func(t *testing.T) {
		led := newLedger()
		l := limits.New(led, 0)
		lim := tollgate.Limits{MonthlyTokens: 100, MaxConcurrent: 2}
		a := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
		b := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
		if n := tokensLeft(t, l, "k", lim, t0); n != 40 {
			t.Fatalf("with 60 reserved: %d left, want 40", n)
		}
		led.commit("k", 12)
		if n := tokensLeft(t, l, "k", lim, t0); n != 28 {
			t.Fatalf("committed but not yet settled (counted twice, never less): %d left, want 28", n)
		}
		settle(t, a, 12, t0)
		if n := tokensLeft(t, l, "k", lim, t0); n != 58 {
			t.Fatalf("after settling 12 of 30: %d left, want 58", n)
		}
		settle(t, a, 0, t0) // no-op: must not give back b's reservation nor free its slot
		if n := tokensLeft(t, l, "k", lim, t0); n != 58 {
			t.Fatalf("a second Settle changed the quota: %d left, want 58", n)
		}
		c := mustAdmit(t, l, rqTokens("k", lim, 10, 20, 1, t0))
		if n := tokensLeft(t, l, "k", lim, t0); n != 28 {
			t.Fatalf("with b and c in flight: %d left, want 28", n)
		}
		wantRefusal(t, l, rqTokens("k", lim, 0, 0, 0, t0), tollgate.CodeTooManyConcurrent, false) // b and c
		settle(t, b, 0, t0)                                                                       // b failed unbilled
		settle(t, c, 0, t0)                                                                       // so did c
		if n := tokensLeft(t, l, "k", lim, t0); n != 88 {
			t.Fatalf("with nothing in flight: %d left, want 88", n)
		}
	})
	t.Run("monthly requests", func(t *testing.T) {
		led := newLedger()
		l := limits.New(led, 0)
		lim := tollgate.Limits{MonthlyRequests: 3}
		a := mustAdmit(t, l, rq("k", lim, t0))
		b := mustAdmit(t, l, rq("k", lim, t0))
		led.commit("k", 0)
		settle(t, a, 0, t0)
		settle(t, a, 0, t0) // no-op: must not give back b's reservation
		c := mustAdmit(t, l, rq("k", lim, t0))
		wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, false) // 1 committed, b and c
		settle(t, b, 0, t0)
		settle(t, c, 0, t0)
		mustAdmit(t, l, rq("k", lim, t0))
		mustAdmit(t, l, rq("k", lim, t0))
		wantRefusal(t, l, rq("k", lim, t0), tollgate.CodeQuotaExceeded, false)
	})
}

// When a key's limits change while it has requests in flight, the rebuilt
// state keeps what they hold: their concurrency slots, their reservations
// against the monthly quotas, and the tokens taken from the bucket.
func TestLimitsChangeKeepsReservations(t *testing.T) {
	led := newLedger()
	l := limits.New(led, 0)
	lim1 := tollgate.Limits{MaxConcurrent: 1, TokensPerMinute: 100, MonthlyRequests: 2, MonthlyTokens: 100}
	a := mustAdmit(t, l, rqTokens("k", lim1, 10, 20, 1, t0)) // holds 30

	lim2 := lim1
	lim2.TokensPerMinute = 200
	wantRefusal(t, l, rqTokens("k", lim2, 0, 0, 0, t0), tollgate.CodeTooManyConcurrent, false)
	if st := l.State("k", lim2, t0); st.RemainingTokens != 170 {
		t.Fatalf("after raising tokens per minute: %d left, want 170 (200 less the 30 a holds, not a fresh 200)", st.RemainingTokens)
	}

	lim3 := lim2
	lim3.MaxConcurrent, lim3.MonthlyRequests = 2, 1
	wantRefusal(t, l, rqTokens("k", lim3, 0, 0, 0, t0), tollgate.CodeQuotaExceeded, false)

	lim4 := lim3
	lim4.MonthlyRequests, lim4.MonthlyTokens = 5, 50
	if n := tokensLeft(t, l, "k", lim4, t0); n != 20 {
		t.Fatalf("after lowering the token quota to 50: %d left, want 20 (a holds 30)", n)
	}
	b := mustAdmit(t, l, rqTokens("k", lim4, 10, 20, 1, t0))
	if b.Output() != 10 || !b.Lowered() {
		t.Fatalf("b: output %d lowered %v; want 10 (20 left), lowered", b.Output(), b.Lowered())
	}
	wantRefusal(t, l, rqTokens("k", lim4, 0, 0, 0, t0), tollgate.CodeQuotaExceeded, false) // a and b hold the rest

	// a settles against the rebuilt state: its slot, request and tokens
	// come back there.
	led.commit("k", 15)
	settle(t, a, 15, t0)
	if st := l.State("k", lim4, t0); st.RemainingTokens != 165 {
		t.Fatalf("after a settles 15 of 30: %d tokens left this minute, want 165 (200 less a's 15 and b's 20)", st.RemainingTokens)
	}
	if n := tokensLeft(t, l, "k", lim4, t0); n != 15 {
		t.Fatalf("after a settles: %d of the quota left, want 15 (50 - 15 committed - 20 held by b)", n)
	}
	c := mustAdmit(t, l, rqTokens("k", lim4, 0, 0, 0, t0))
	wantRefusal(t, l, rqTokens("k", lim4, 0, 0, 0, t0), tollgate.CodeTooManyConcurrent, false) // b and c
	settle(t, b, 0, t0)
	settle(t, c, 0, t0)
	if n := tokensLeft(t, l, "k", lim4, t0); n != 35 {
		t.Fatalf("with nothing in flight: %d left, want 35", n)
	}
}

// Pruning idle keys never drops one with a request in flight: its slot and
// reservations survive however many other keys come and go.
func TestPruneKeepsKeysInFlight(t *testing.T) {
	led := newLedger()
	l := limits.New(led, 10)
	quota := tollgate.Limits{RequestsPerSecond: 1, Burst: 1, MonthlyRequests: 2}
	led.set("quota", 1, 0)
	a := mustAdmit(t, l, rq("quota", quota, t0)) // the last request of the quota
	conc := tollgate.Limits{MaxConcurrent: 1, TokensPerMinute: 1000}
	c := mustAdmit(t, l, rqTokens("conc", conc, 10, 20, 1, t0))

	idle := tollgate.Limits{RequestsPerSecond: 1, Burst: 1}
	later := t0.Add(time.Hour) // every bucket of both keys is full again
	for i := 0; i < 1000; i++ {
		now := later.Add(time.Duration(i) * time.Second)
		ls := mustAdmit(t, l, rq(fmt.Sprint("idle", i), idle, now))
		settle(t, ls, 0, now)
		if n := l.Len(); n > 11 {
			t.Fatalf("after %d idle keys the limiter holds %d (limit 10)", i+1, n)
		}
	}
	end := later.Add(time.Hour)
	wantRefusal(t, l, rq("quota", quota, end), tollgate.CodeQuotaExceeded, false)
	wantRefusal(t, l, rq("conc", conc, end), tollgate.CodeTooManyConcurrent, false)
	settle(t, a, 0, end) // a failed unbilled: its request comes back
	settle(t, c, 30, end)
	mustAdmit(t, l, rq("quota", quota, end))
	mustAdmit(t, l, rq("conc", conc, end))
}

// A key with no limits is admitted with the output it asked for and holds
// nothing: no state, no slot, no quota, and its Settle is harmless.
func TestUnlimitedKey(t *testing.T) {
	led := newLedger()
	l := limits.New(led, 0)
	led.set("k", 1<<40, 1<<40) // whatever it used: no quota applies
	var leases []limits.Lease
	for i := 0; i < 1000; i++ {
		ls := mustAdmit(t, l, rqTokens("k", tollgate.Limits{}, 1_000_000, 1234, 1, t0))
		if ls.Output() != 1234 || ls.Lowered() {
			t.Fatalf("unlimited lease: output %d lowered %v; want 1234, not lowered", ls.Output(), ls.Lowered())
		}
		leases = append(leases, ls)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("an unlimited key is held: Len %d", n)
	}
	if led.calls != 0 {
		t.Fatalf("the ledger was read %d times for an unlimited key", led.calls)
	}

	// Its Settle (even twice, even for a key that also has limited
	// requests in flight) gives nothing back that was not taken.
	lim := tollgate.Limits{MaxConcurrent: 1, TokensPerMinute: 100}
	a := mustAdmit(t, l, rqTokens("k2", lim, 10, 20, 1, t0))
	u := mustAdmit(t, l, rqTokens("k2", tollgate.Limits{}, 10, 20, 1, t0))
	for i := 0; i < 2; i++ {
		settle(t, u, 0, t0)
		for _, ls := range leases {
			settle(t, ls, 5, t0)
		}
	}
	wantRefusal(t, l, rqTokens("k2", lim, 0, 0, 0, t0), tollgate.CodeTooManyConcurrent, false)
	if st := l.State("k2", lim, t0); st.RemainingTokens != 70 {
		t.Fatalf("unlimited settlements changed k2's bucket: %d left, want 70", st.RemainingTokens)
	}
	settle(t, a, 30, t0)
	mustAdmit(t, l, rqTokens("k2", lim, 0, 0, 0, t0))
}

// Regression tests for two bugs found in review, now fixed.

// The bucket level is brought up to date in float steps; when the wait
// Admit computes is a whole number of milliseconds the sum of the steps can
// fall one ulp short of the request, so a retry at exactly Retry-After is
// refused again (RetryAfter 1ms).
func TestTokensPerMinuteRetryAfterFloatRounding(t *testing.T) {
	l := limits.New(nil, 0)
	lim := tollgate.Limits{TokensPerMinute: 3}
	settle(t, mustAdmit(t, l, rqTokens("k", lim, 3, 0, 0, t0)), 3, t0)
	at := t0.Add(4468 * time.Millisecond)
	e := wantRefusal(t, l, rqTokens("k", lim, 2, 0, 0, at), tollgate.CodeTokensPerMinute, false)
	if e.RetryAfter != 35532*time.Millisecond {
		t.Fatalf("RetryAfter %v, want 35.532s", e.RetryAfter)
	}
	mustAdmit(t, l, rqTokens("k", lim, 2, 0, 0, at.Add(e.RetryAfter))) // refused today
}

// When tokens per minute change while requests are in flight, the rebuilt
// bucket accounts for what they hold: a lowered allowance starts as far
// below full as the old one was, and a new allowance starts short of what
// requests admitted without one reserved (they settle into it).
func TestTokensPerMinuteChangeInFlight(t *testing.T) {
	t.Run("lowered", func(t *testing.T) {
		l := limits.New(nil, 0)
		hi := tollgate.Limits{MaxConcurrent: 5, TokensPerMinute: 1000}
		lo := tollgate.Limits{MaxConcurrent: 5, TokensPerMinute: 100}
		mustAdmit(t, l, rqTokens("k", hi, 10, 90, 1, t0)) // holds 100
		// 100 in flight already: nothing more fits this minute under lo.
		wantRefusal(t, l, rqTokens("k", lo, 10, 90, 1, t0), tollgate.CodeTokensPerMinute, false)
	})
	t.Run("added", func(t *testing.T) {
		l := limits.New(nil, 0)
		none := tollgate.Limits{MaxConcurrent: 5}
		tpm := tollgate.Limits{MaxConcurrent: 5, TokensPerMinute: 100}
		a := mustAdmit(t, l, rqTokens("k", none, 10, 90, 1, t0)) // holds 100, from no bucket yet
		if st := l.State("k", tpm, t0); st.RemainingTokens != 100 {
			t.Errorf("before the new allowance applies the headers show %d", st.RemainingTokens)
		}
		wantRefusal(t, l, rqTokens("k", tpm, 10, 90, 1, t0), tollgate.CodeTokensPerMinute, false) // 100 of 100 in flight
		settle(t, a, 0, t0)                                                                       // a used nothing: its 100 come back
		if st := l.State("k", tpm, t0); st.RemainingTokens != 100 {
			t.Errorf("after a settled with 0 the bucket shows %d, want 100", st.RemainingTokens)
		}
		mustAdmit(t, l, rqTokens("k", tpm, 10, 90, 1, t0))
	})
}
