// Package billing sends committed usage to a billing system, today Stripe's
// Billing Meter Events, exactly once: a background Exporter reads the usage
// rows past a durable cursor, sums them per account and interval, sends one
// event per account, interval and meter with a deterministic identifier, and
// advances the cursor only once every event of the batch was accepted.
//
// Exactly once rests on three things. The batch being sent is stored before
// the first event leaves (the pending plan), so after a crash the same rows
// are summed into the same events with the same identifiers. Stripe refuses
// an identifier it has already accepted, which the Sender reports as
// accepted. And the cursor only moves past rows that can no longer change:
// every usage row has a sequence number in commit order (the store's
// Horizon), and a row counts as exported when its seq is below the cursor's
// Seq and its time is before the cursor's Before, so a row committed late
// (a long request, a replica's journal loaded later) is picked up by the
// next batch, never skipped and never counted twice.
//
// The package imports neither Gin nor storage nor Stripe's client: the
// database sits behind Store and the billing system behind Sender, both
// declared here.
package billing

import (
	"context"
	"errors"
	"time"

	"tollgate"
)

// Cursor marks what has been exported: every usage row whose seq is below
// Seq and whose time is before Before.
type Cursor struct {
	Before time.Time
	Seq    int64
}

// Floor returns t rounded down to a multiple of d since the Unix epoch, as
// stores floor usage times into intervals.
func Floor(t time.Time, d time.Duration) time.Time {
	n := t.UnixNano()
	return time.Unix(0, n-n%int64(d)).UTC()
}

// Equal reports whether c and d mark the same rows.
func (c Cursor) Equal(d Cursor) bool { return c.Seq == d.Seq && c.Before.Equal(d.Before) }

// Plan is a batch: the usage rows that To marks as exported and From does
// not, summed per account and Interval.
type Plan struct {
	From, To Cursor
	Interval time.Duration
}

// Equal reports whether p and q are the same batch.
func (p Plan) Equal(q Plan) bool {
	return p.From.Equal(q.From) && p.To.Equal(q.To) && p.Interval == q.Interval
}

// State is an exporter's durable state. Pending, when set, is the batch
// being sent; its From is Cursor.
type State struct {
	Cursor  Cursor
	Pending *Plan
	// Owner and LeaseUntil say which process exports (one at a time).
	Owner      string
	LeaseUntil time.Time
	// LastExport is when the cursor last moved; LastError and LastErrorAt
	// are the last failure ("" once a batch succeeds after it).
	LastExport  time.Time
	LastError   string
	LastErrorAt time.Time
	// EventsSent and Batches count what was sent since the first export.
	EventsSent, Batches int64
	// Epoch is mixed into every event identifier; set at the first run,
	// and anew when tollgate migrate moves the usage to another database,
	// where sequence numbers mean something else.
	Epoch string
}

// Group is one account's usage in one interval of a batch.
type Group struct {
	AccountID string
	// CustomerID is the account's Stripe customer id now ("" when it has
	// none: its usage is not sent).
	CustomerID string
	// Start is the start of the interval.
	Start time.Time
	// Rows counts the usage rows; Requests those charged to a request
	// quota (status below 500), as reports count them.
	Rows, Requests int64
	// Tokens are prompt and completion tokens.
	Tokens int64
	Cost   tollgate.Money
}

// Store keeps exporter state and sums usage. Both storage/sqlite and
// storage/postgres satisfy it; each is safe for concurrent use.
type Store interface {
	// BillingState returns the state of exporter name, the zero State
	// (Cursor zero) if it never ran.
	BillingState(ctx context.Context, name string) (State, error)
	// UpdateBilling applies fn to exporter name's state in one transaction
	// (fn sees the zero State the first time) and stores the result, unless
	// fn returns an error, which UpdateBilling returns as is. A result with
	// no Pending batch forgets, in the same transaction, the identifiers
	// MarkAccepted stored.
	UpdateBilling(ctx context.Context, name string, fn func(*State) error) (State, error)
	// MarkAccepted stores that the billing system accepted the event
	// identifier of exporter name's pending batch.
	MarkAccepted(ctx context.Context, name, identifier string) error
	// AcceptedEvents returns the identifiers MarkAccepted stored for
	// exporter name's pending batch.
	AcceptedEvents(ctx context.Context, name string) ([]string, error)
	// OldestUnexported returns the time of the oldest committed usage row
	// whose seq is at least seq (the zero time if there is none): with the
	// cursor's Seq, the oldest usage a batch has yet to send.
	OldestUnexported(ctx context.Context, seq int64) (time.Time, error)
	// UsageHorizon returns a seq below which every usage row is committed
	// and no row will ever be added.
	UsageHorizon(ctx context.Context) (int64, error)
	// BillingGroups sums the usage rows of p that carry an account, one
	// Group per account and interval (rows' times floored to p.Interval),
	// with each account's Stripe customer id.
	BillingGroups(ctx context.Context, p Plan) ([]Group, error)
}

// Event is one meter event to send.
type Event struct {
	// Identifier is the same every time this event is sent, so a resend is
	// recognised as one.
	Identifier string
	EventName  string
	CustomerID string
	Value      int64
	Timestamp  time.Time
}

// Sender delivers meter events. Send returns nil when the event was
// accepted now or earlier (a resend of an identifier already accepted), and
// a *SendError otherwise. It must be safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, ev Event) error
}

// SendError is a Sender's refusal. Permanent says that sending the same
// event again will fail the same way until the operator changes something
// (a meter that does not exist, a revoked key); the exporter retries those
// too, but less often.
type SendError struct {
	Status    int // HTTP status, 0 for a network failure
	Permanent bool
	Message   string // what the billing system said; never a secret
}

func (e *SendError) Error() string { return e.Message }

// ErrNotLeader is UpdateBilling's error (through the exporter's claim) when
// another process holds the export lease.
var ErrNotLeader = errors.New("billing: another process holds the export lease")
