package billing

import (
	"context"
	"errors"
	"time"
)

// Run exports until ctx ends: a batch as each interval becomes due, at once
// while catching up, with back-off after a failure (1 s doubling to
// MaxBackoff, starting at 30 s for a permanent refusal). Another process
// holding the lease leaves this one waiting to take over. On return the
// lease is given up, so a restarted process takes over at once.
func (e *Exporter) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			e.release()
			return
		case <-timer.C:
		}
		more, err := e.Step(ctx)
		wait := e.wait(more, err)
		e.mu.Lock()
		e.next = e.cfg.Now().Add(wait)
		e.mu.Unlock()
		timer.Reset(wait)
	}
}

// wait is how long Run waits after a step that returned more and err.
func (e *Exporter) wait(more bool, err error) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case errors.Is(err, ErrNotLeader):
		e.failures = 0
		return e.cfg.Interval
	case err != nil:
		e.failures++
		base := time.Second
		var se *SendError
		if errors.As(err, &se) && se.Permanent {
			base = 30 * time.Second
		}
		d := base << min(e.failures-1, 20)
		return min(d, e.cfg.MaxBackoff)
	case more:
		e.failures = 0
		return 0
	}
	e.failures = 0
	// The next interval is due Delay after it ends.
	now := e.cfg.Now()
	next := Floor(now.Add(-e.cfg.Delay), e.cfg.Interval).Add(e.cfg.Interval + e.cfg.Delay)
	return max(next.Sub(now), 10*time.Millisecond)
}

// release gives the lease up, if this process holds it.
func (e *Exporter) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		if s.Owner != e.cfg.Owner {
			return ErrNotLeader
		}
		s.LeaseUntil = time.Time{}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotLeader) {
		e.log.Warn("billing: give up the export lease", "error", err.Error())
	}
	e.setLeader(false)
}

// Status is what GET /admin/billing shows of an exporter.
type Status struct {
	Name     string
	Meters   Meters
	Interval time.Duration
	Delay    time.Duration
	// Leader says whether this process holds the export lease.
	Leader bool
	State  State
	// Lag is the age of the oldest usage not sent yet: how far the
	// cursor's time is behind now, or further when older usage waits
	// (committed late, or held back on PostgreSQL by a long transaction).
	Lag time.Duration
	// NextAttempt is when this process tries next (zero before its first).
	NextAttempt time.Time
}

// Status returns the exporter's state as stored, and this process's part.
func (e *Exporter) Status(ctx context.Context) (Status, error) {
	st, err := e.cfg.Store.BillingState(ctx, e.cfg.Name)
	if err != nil {
		return Status{}, err
	}
	var oldest time.Time
	if !st.Cursor.Before.IsZero() {
		if oldest, err = e.cfg.Store.OldestUnexported(ctx, st.Cursor.Seq); err != nil {
			return Status{}, err
		}
	}
	e.mu.Lock()
	s := Status{Name: e.cfg.Name, Meters: e.cfg.Meters, Interval: e.cfg.Interval, Delay: e.cfg.Delay,
		Leader: e.leader, State: st, NextAttempt: e.next}
	e.mu.Unlock()
	s.Lag = lag(e.cfg.Now(), st.Cursor, oldest)
	return s, nil
}

// Lag is Status's Lag as this process last saw it while it held the lease
// (0 otherwise); for a metric, read at each scrape without a query.
func (e *Exporter) Lag() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leader {
		return 0
	}
	return lag(e.cfg.Now(), e.cursor, e.oldest)
}

// lag is the age of the oldest usage not sent: before the cursor's time,
// or the oldest row past its seq if that is older.
func lag(now time.Time, c Cursor, oldest time.Time) time.Duration {
	if c.Before.IsZero() {
		return 0
	}
	from := c.Before
	if !oldest.IsZero() && oldest.Before(from) {
		from = oldest
	}
	return max(now.Sub(from), 0)
}
