package metering

import (
	"sync"
	"time"

	"tollgate"
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

	mu       sync.RWMutex
	keys     map[string]*keyMonth
	accounts map[string]*keyMonth // by account id: the totals of its keys
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
	return &Counters{now: now, keys: make(map[string]*keyMonth), accounts: make(map[string]*keyMonth)}
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
	c.keys, c.accounts = keys, make(map[string]*keyMonth)
	c.mu.Unlock()
}

// SeedAccounts sets each account's totals for the UTC month containing
// month (the usage made under it, by account id; "" is left out). Call it
// before serving traffic.
func (c *Counters) SeedAccounts(month time.Time, totals map[string]Totals) {
	m := MonthStart(month)
	c.mu.Lock()
	defer c.mu.Unlock()
	accounts := make(map[string]*keyMonth, len(totals))
	for acct, t := range totals {
		if acct != "" {
			accounts[acct] = &keyMonth{month: m, totals: t}
		}
	}
	c.accounts = accounts
}

// Add counts a committed event for its key, and for its account when it
// has one. An event dated in another month than the current one does not
// count: at the month's start every key begins again at zero.
func (c *Counters) Add(ev Event) {
	m := MonthStart(c.now())
	if !MonthStart(ev.Time).Equal(m) {
		return
	}
	c.add(func() map[string]*keyMonth { return c.keys }, ev.KeyID, m, ev)
	if ev.AccountID != "" {
		c.add(func() map[string]*keyMonth { return c.accounts }, ev.AccountID, m, ev)
	}
}

// add counts ev in the entry id of the map table returns (read under c.mu).
func (c *Counters) add(table func() map[string]*keyMonth, id string, m time.Time, ev Event) {
	c.mu.RLock()
	km := table()[id]
	c.mu.RUnlock()
	if km == nil {
		c.mu.Lock()
		if km = table()[id]; km == nil {
			km = &keyMonth{month: m}
			table()[id] = km
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
	c.mu.RLock()
	km := c.keys[keyID]
	c.mu.RUnlock()
	return c.month(km)
}

// AccountMonth returns the totals of account id's keys for the current
// UTC month, counted from events that carried the account id.
func (c *Counters) AccountMonth(id string) Totals {
	c.mu.RLock()
	km := c.accounts[id]
	c.mu.RUnlock()
	return c.month(km)
}

// AccountUsed is Used for an account; it makes Counters a
// limits.AccountLedger.
func (c *Counters) AccountUsed(id string) (requests, tokens int64) {
	t := c.AccountMonth(id)
	return t.Requests, t.TotalTokens()
}

// Spent returns what keyID's requests cost this month; with AccountSpent
// it makes Counters a limits.CostLedger.
func (c *Counters) Spent(keyID string) tollgate.Money { return c.Month(keyID).Cost }

// AccountSpent returns what account id's keys' requests cost this month.
func (c *Counters) AccountSpent(id string) tollgate.Money { return c.AccountMonth(id).Cost }

func (c *Counters) month(km *keyMonth) Totals {
	m := MonthStart(c.now())
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
