package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/inference/ollamatest"
)

// With the one GPU slot taken, a key on the free plan (weight 1) queues 4
// calls, then a key on the pro plan (weight 3) queues 6. As the slot frees
// up, Ollama receives them in deficit round robin order: one free, three
// pro, one free, three pro, then the rest; each billed once.
func TestQueuedCallsServedByPlanWeight(t *testing.T) {
	hold := make(chan struct{})
	e := newEnv(t, withSlots(1, time.Minute), withFake(ollamatest.WithFault(ollamatest.Fault{Hold: hold})))
	free := key("key_free", tollgate.Limits{})
	pro := key("key_pro", tollgate.Limits{})
	pro.Plan = "pro"
	var wg sync.WaitGroup
	call := func(k string, p string) {
		kk := free
		if k == "pro" {
			kk = pro
		}
		wg.Go(func() {
			if _, err := e.gw.Generate(context.Background(), e.caller(kk), prompt(p), nil); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		})
	}
	call("free", "warm")
	e.waitFake("the first call to be held", func(s ollamatest.Stats) bool { return s.InFlight == 1 })
	queue := func(k string, n int) {
		for i := range n {
			before := e.inf.Queued()
			call(k, fmt.Sprintf("%s%d", k, i))
			waitUntil(t, func() bool { return e.inf.Queued() == before+1 })
		}
	}
	queue("free", 4)
	queue("pro", 6)
	for n := 1; n <= 10; n++ {
		hold <- struct{}{} // the call holding the slot finishes; the next one reaches Ollama
		e.waitFake("the next queued call", func(s ollamatest.Stats) bool { return s.Requests == int64(n+1) })
	}
	close(hold)
	wg.Wait()
	var order []string
	for _, r := range e.fake.Requests()[1:] {
		order = append(order, strings.TrimRight(r.Prompt, "0123456789"))
	}
	if got, want := strings.Join(order, " "), "free pro pro pro free pro pro pro free free"; got != want {
		t.Errorf("order of service: %s\nwant               %s", got, want)
	}
	if rows := e.rows(); len(rows) != 11 {
		t.Errorf("%d usage rows, want 11", len(rows))
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}
