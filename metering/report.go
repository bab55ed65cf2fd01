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
)

// Query selects usage for a report or an export.
type Query struct {
	// KeyID limits the query to one key; "" means all keys.
	KeyID string
	// From is the first instant included; zero means from the beginning.
	From time.Time
	// To is the first instant excluded; zero means up to now and beyond.
	To time.Time
	// GroupBy is GroupNone, GroupDay, GroupModel or GroupKey. Exports
	// ignore it.
	GroupBy string
}

// Validate reports a GroupBy that is not known or a To that is not after
// From.
func (q Query) Validate() error {
	switch q.GroupBy {
	case GroupNone, GroupDay, GroupModel, GroupKey:
	default:
		return fmt.Errorf("metering: group_by %q: want day, model or key", q.GroupBy)
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

// ParseDate reads a report boundary as a UTC day ("2006-01-02") or an
// RFC 3339 time. Errors are time.Parse's for the RFC 3339 form.
func ParseDate(v string) (time.Time, error) {
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, v)
}
