package metering

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source for deterministic tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func TestMonthStart(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	for _, tc := range []struct{ in, start, next time.Time }{
		{time.Date(2025, 3, 14, 15, 9, 0, 0, time.UTC), time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
		{time.Date(2025, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC), time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)},
		// 00:30 on 1 April in CET is still March in UTC.
		{time.Date(2025, 4, 1, 0, 30, 0, 0, cet), time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if got := MonthStart(tc.in); !got.Equal(tc.start) || got.Location() != time.UTC {
			t.Errorf("MonthStart(%v) = %v, want %v", tc.in, got, tc.start)
		}
		if got := NextMonthStart(tc.in); !got.Equal(tc.next) {
			t.Errorf("NextMonthStart(%v) = %v, want %v", tc.in, got, tc.next)
		}
	}
}

func TestCountersMonthRollover(t *testing.T) {
	clk := &clock{t: time.Date(2025, 1, 31, 23, 59, 0, 0, time.UTC)}
	c := NewCounters(clk.now)
	c.Seed(clk.now(), map[string]Totals{"a": {Requests: 10, PromptTokens: 100, CompletionTokens: 200, Cost: 5}})

	ev := testEvent("r1")
	ev.KeyID, ev.Time = "a", clk.now()
	c.Add(ev)
	want := Totals{Requests: 11, PromptTokens: 110, CompletionTokens: 220, Cost: 19}
	if got := c.Month("a"); got != want {
		t.Fatalf("January: %+v, want %+v", got, want)
	}
	if got := c.Month("b"); got != (Totals{}) {
		t.Fatalf("unknown key: %+v", got)
	}

	clk.set(time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC))
	if got := c.Month("a"); got != (Totals{}) {
		t.Fatalf("February starts at zero, got %+v", got)
	}
	// A January request committed just after midnight counts for January,
	// which is over: it does not count in February.
	late := testEvent("r2")
	late.KeyID, late.Time = "a", time.Date(2025, 1, 31, 23, 59, 59, 0, time.UTC)
	c.Add(late)
	if got := c.Month("a"); got != (Totals{}) {
		t.Fatalf("last month's event counted: %+v", got)
	}
	feb := testEvent("r3")
	feb.KeyID, feb.Time = "a", clk.now()
	c.AddAll([]Event{feb, feb})
	if got := c.Month("a"); got.Requests != 2 || got.TotalTokens() != 60 {
		t.Fatalf("February: %+v", got)
	}
}

func TestCountersSeedOtherMonthIsStale(t *testing.T) {
	clk := &clock{t: time.Date(2025, 2, 10, 0, 0, 0, 0, time.UTC)}
	c := NewCounters(clk.now)
	c.Seed(time.Date(2025, 1, 5, 0, 0, 0, 0, time.UTC), map[string]Totals{"a": {Requests: 3}})
	if got := c.Month("a"); got != (Totals{}) {
		t.Fatalf("January seed counted in February: %+v", got)
	}
}

func TestCountersConcurrent(t *testing.T) {
	now := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	c := NewCounters(func() time.Time { return now })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				ev := testEvent("x")
				ev.KeyID, ev.Time = fmt.Sprint("k", (g+i)%4), now
				c.Add(ev)
				_ = c.Month(ev.KeyID)
			}
		}()
	}
	wg.Wait()
	var sum int64
	for k := range 4 {
		sum += c.Month(fmt.Sprint("k", k)).Requests
	}
	if sum != 8000 {
		t.Fatalf("requests counted %d, want 8000", sum)
	}
}

func BenchmarkCountersMonth(b *testing.B) {
	now := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	c := NewCounters(func() time.Time { return now })
	ev := testEvent("x")
	ev.Time = now
	c.Add(ev)
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Month(ev.KeyID)
	}
}
