package metering

import (
	"sync"
	"time"
)

// MonthStart returns the first instant of t's month in UTC.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// NextMonthStart returns the first instant of the month after t's, in UTC:
// when a monthly quota that covers t resets.
func NextMonthStart(t time.Time) time.Time {
	return MonthStart(t).AddDate(0, 1, 0)
}

// Counters keep each key's usage for the current UTC month in memory, so a
// quota check costs a map lookup, not a database query. Seed them from the
// database at start-up and feed them committed events (Recorder's OnCommit).
// Memory is one small entry per key that has used the service. Counters are
// safe for concurrent use.
type Counters struct {
	now func() time.Time

	mu   sync.RWMutex
	keys map[string]*keyMonth
}

// keyMonth is one key's totals for one month.
type keyMonth struct {
	mu     sync.Mutex
	month  time.Time // MonthStart of the month counted
	totals Totals
}

// NewCounters returns empty counters that read the time from now
// (time.Now when nil).
func NewCounters(now func() time.Time) *Counters {
	if now == nil {
		now = time.Now
	}
	return &Counters{now: now, keys: make(map[string]*keyMonth)}
}

// Seed replaces all counters with totals for the month containing month,
// typically the result of a month-totals query at start-up. Call it before
// serving traffic: events added before Seed are forgotten.
func (c *Counters) Seed(month time.Time, totals map[string]Totals) {
	m := MonthStart(month)
	keys := make(map[string]*keyMonth, len(totals))
	for id, t := range totals {
		keys[id] = &keyMonth{month: m, totals: t}
	}
	c.mu.Lock()
	c.keys = keys
	c.mu.Unlock()
}

// Add counts a committed event for its key. An event dated in another month
// than the current one does not count: at the month's start every key begins
// again at zero.
func (c *Counters) Add(ev Event) {
	m := MonthStart(c.now())
	if !MonthStart(ev.Time).Equal(m) {
		return
	}
	c.mu.RLock()
	km := c.keys[ev.KeyID]
	c.mu.RUnlock()
	if km == nil {
		c.mu.Lock()
		if km = c.keys[ev.KeyID]; km == nil {
			km = &keyMonth{month: m}
			c.keys[ev.KeyID] = km
		}
		c.mu.Unlock()
	}
	km.mu.Lock()
	if !km.month.Equal(m) {
		km.month, km.totals = m, Totals{}
	}
	km.totals.add(ev)
	km.mu.Unlock()
}

// AddAll counts a batch of committed events; it fits RecorderOptions.OnCommit.
func (c *Counters) AddAll(events []Event) {
	for _, ev := range events {
		c.Add(ev)
	}
}

// Month returns keyID's totals for the current UTC month (zero for a key with
// no usage this month).
func (c *Counters) Month(keyID string) Totals {
	m := MonthStart(c.now())
	c.mu.RLock()
	km := c.keys[keyID]
	c.mu.RUnlock()
	if km == nil {
		return Totals{}
	}
	km.mu.Lock()
	defer km.mu.Unlock()
	if !km.month.Equal(m) {
		return Totals{}
	}
	return km.totals
}

// Used returns keyID's requests charged to a request quota and its total
// tokens this month; it makes Counters a limits.Ledger.
func (c *Counters) Used(keyID string) (requests, tokens int64) {
	t := c.Month(keyID)
	return t.Requests, t.TotalTokens()
}
