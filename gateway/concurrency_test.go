package gateway_test

import (
	"context"
	"sync"
	"testing"

	"tollgate"
	"tollgate/inference/ollamatest"
)

// hammer makes n calls from each of g goroutines, all starting at once,
// and returns the count of successes and of each error code.
func (e *env) hammer(t *testing.T, g, n int, call func() error) (ok int, refused map[tollgate.Code]int) {
	t.Helper()
	var mu sync.Mutex
	refused = map[tollgate.Code]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range n {
				err := call()
				mu.Lock()
				if err == nil {
					ok++
				} else {
					refused[tollgate.ErrorCode(err)]++
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return ok, refused
}

// 200 calls at once on a key with 100 monthly requests: exactly 100
// succeed, exactly 100 rows say 200, the rest are quota_exceeded.
func TestConcurrentRequestQuotaIsExact(t *testing.T) {
	e := newEnv(t)
	k := key("key_requests", tollgate.Limits{MonthlyRequests: 100})
	ok, refused := e.hammer(t, 50, 4, func() error {
		_, err := e.gw.Generate(context.Background(), e.caller(k), prompt("hi"), nil)
		return err
	})
	if ok != 100 || refused[tollgate.CodeQuotaExceeded] != 100 || len(refused) != 1 {
		t.Errorf("%d succeeded, refusals %v; want 100 and 100 quota_exceeded", ok, refused)
	}
	rows := e.rows()
	n200 := 0
	for _, r := range rows {
		if r.Status == 200 {
			n200++
		}
	}
	if len(rows) != 100 || n200 != 100 {
		t.Errorf("%d rows, %d with status 200; want exactly 100 and 100", len(rows), n200)
	}
	if got := i64(e.gw.Quota(k).RemainingRequests); got != "0" {
		t.Errorf("remaining requests %s, want 0", got)
	}
	if g := e.inFlight.sum(); g != 0 {
		t.Errorf("in-flight gauge %d at the end, want 0", g)
	}
}

// Many calls at once on a key with a monthly token quota: the tokens billed
// never exceed it, because each call reserves its prompt bound and its
// output cap (lowered to what is left) and the fake, like Ollama, stops at
// num_predict.
func TestConcurrentTokenQuotaNeverExceeded(t *testing.T) {
	chunks := make([]string, 40)
	for i := range chunks {
		chunks[i] = "w "
	}
	e := newEnv(t, withFake(ollamatest.WithReply(ollamatest.Reply{Chunks: chunks})))
	const quota = 1000
	k := key("key_tokens", tollgate.Limits{MonthlyTokens: quota})
	ok, refused := e.hammer(t, 50, 4, func() error {
		_, err := e.gw.Generate(context.Background(), e.caller(k), prompt("go on"), nil)
		return err
	})
	if ok == 0 || refused[tollgate.CodeQuotaExceeded] == 0 || ok+refused[tollgate.CodeQuotaExceeded] != 200 {
		t.Errorf("%d succeeded, refusals %v; want some of each and only quota_exceeded", ok, refused)
	}
	var billed int64
	rows := e.rows()
	for _, r := range rows {
		if r.Status != 200 || r.PromptTokens != 2 || r.CompletionTokens < 1 || r.CompletionTokens > 40 {
			t.Errorf("row %+v", r)
		}
		billed += r.TotalTokens()
	}
	if billed > quota {
		t.Errorf("billed %d tokens over %d rows, over the quota of %d", billed, len(rows), quota)
	}
	if len(rows) != ok {
		t.Errorf("%d rows for %d successful calls", len(rows), ok)
	}
	if got, want := i64(e.gw.Quota(k).RemainingTokens), quota-billed; got != i64(&want) {
		t.Errorf("remaining tokens %s, want %d", got, want)
	}
	// Ollama was never asked for more than the model's cap, and some calls
	// near the end got less (timing decides how many: logged only).
	lowered := 0
	for _, r := range e.generateRequests() {
		n, _ := r.NumPredict()
		if n < 1 || n > 64 {
			t.Errorf("num_predict %d sent", n)
		}
		if n < 64 {
			lowered++
		}
	}
	t.Logf("%d calls succeeded, %d tokens billed of %d, %d with a lowered num_predict", ok, billed, quota, lowered)
}
