package metering

import (
	"fmt"
	"time"
	"tollgate"
)

// Ways a Query can group its rows.
const (
	GroupNone  = ""      // one row with the totals
	GroupDay   = "day"   // one row per UTC day, Group "2006-01-02"
	GroupModel = "model" // one row per public model name
	GroupKey   = "key"   // one row per key id
	// GroupAccount is one row per account id the usage was made under
	// ("" for keys without an account).
	GroupAccount = "account"
)

// Query selects usage for a report or an export.
type Query struct {
	// KeyID limits the query to one key; "" means all keys.
	KeyID string
	// Model limits the query to one public model name; "" means all.
	Model string
	// From is the first instant included; zero means from the beginning.
	From time.Time
	// To is the first instant excluded; zero means up to now and beyond.
	To time.Time
	// GroupBy is GroupNone, GroupDay, GroupModel, GroupKey or
	// GroupAccount. Exports ignore it.
	GroupBy string
}

// Validate reports a GroupBy that is not known, a From or To outside
// [MinDate, MaxDate], or a To that is not after From.
func (q Query) Validate() error {
	switch q.GroupBy {
	case GroupNone, GroupDay, GroupModel, GroupKey, GroupAccount:
	default:
		return fmt.Errorf("metering: group_by %q: want day, model, key or account", q.GroupBy)
	}
	for _, t := range []time.Time{q.From, q.To} {
		if !t.IsZero() && !inRange(t) {
			return fmt.Errorf("metering: %s is outside the dates usage can be kept for (%s to %s)",
				t.UTC().Format(time.RFC3339), MinDate.Format(time.DateOnly), MaxDate.Format(time.DateOnly))
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
		return fmt.Errorf("metering: range %s to %s is empty: to must be after from",
			q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339))
	}
	return nil
}

// Row is one group of a usage report.
type Row struct {
	// Group is the day ("2006-01-02", UTC), model or key id the row sums,
	// or "" when the query is not grouped.
	Group    string
	Requests int64
	// ChargedRequests counts the requests that did not fail on the
	// gateway's or Ollama's side (status < 500): what a request quota uses.
	ChargedRequests  int64
	PromptTokens     int64
	CompletionTokens int64
	Cost             tollgate.Money
}

// TotalTokens returns prompt plus completion tokens.
func (r Row) TotalTokens() int64 { return r.PromptTokens + r.CompletionTokens }

// The dates a report boundary may name. Usage times are stored as Unix
// nanoseconds (int64: years 1678 to 2262), so a later date would wrap round
// and a report for it would answer nothing instead of an error; 1970 and
// 2200 leave a wide margin on both sides of any real usage.
var (
	MinDate = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxDate = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

func inRange(t time.Time) bool { return !t.Before(MinDate) && !t.After(MaxDate) }

// DateRangeError is a well-formed report boundary outside [MinDate,
// MaxDate].
type DateRangeError struct{ Date time.Time }

func (e *DateRangeError) Error() string {
	return fmt.Sprintf("%s is not between %s and %s", e.Date.UTC().Format(time.RFC3339),
		MinDate.Format(time.DateOnly), MaxDate.Format(time.DateOnly))
}

// ParseDate reads a report boundary as a UTC day ("2006-01-02") or an
// RFC 3339 time, between MinDate and MaxDate inclusive. Errors are
// time.Parse's for the RFC 3339 form, or a *DateRangeError.
func ParseDate(v string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		if t, err = time.Parse(time.RFC3339, v); err != nil {
			return time.Time{}, err
		}
	}
	if !inRange(t) {
		return time.Time{}, &DateRangeError{Date: t}
	}
	return t, nil
}

// TotalsOf turns a grouped summary into each group's Totals (requests are
// those charged to a request quota), to seed Counters.
func TotalsOf(rows []Row) map[string]Totals {
	out := make(map[string]Totals, len(rows))
	for _, r := range rows {
		out[r.Group] = Totals{Requests: r.ChargedRequests, PromptTokens: r.PromptTokens,
			CompletionTokens: r.CompletionTokens, Cost: r.Cost}
	}
	return out
}
