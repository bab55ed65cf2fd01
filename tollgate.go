// Package tollgate is the shared vocabulary of the gateway: what a key may
// do (Capability), what a key or plan may use (Limits), what things cost
// (Money, Price) and the one table of error codes with their HTTP statuses
// (error.go). Every other package may import it; it imports none of them.
//
// It also carries the default model catalog built into the binary
// (defaults.go).
package tollgate

// Capability is something a key may be allowed to do: one of the inference
// operations or administration. Scopes on keys, the endpoints a model
// serves and the endpoint named in a usage record are all Capabilities.
type Capability string

// The capabilities Tollgate knows.
const (
	Generate Capability = "generate"
	Embed    Capability = "embed"
	Predict  Capability = "predict"
	Admin    Capability = "admin"
)

// Valid reports whether c is a known capability.
func (c Capability) Valid() bool {
	switch c {
	case Generate, Embed, Predict, Admin:
		return true
	}
	return false
}

// Inference lists the capabilities that run a model, in a stable order.
func Inference() []Capability { return []Capability{Generate, Embed, Predict} }

// Limits are the per-key limits, set on a key or on a plan. A zero field is
// unset: on a key it falls back to the key's plan (see Over), and where
// neither sets it there is no limit.
type Limits struct {
	RequestsPerSecond float64 `json:"requests_per_second,omitzero"`
	Burst             int     `json:"burst,omitzero"`
	TokensPerMinute   int64   `json:"tokens_per_minute,omitzero"`
	MaxConcurrent     int     `json:"max_concurrent,omitzero"`
	MonthlyTokens     int64   `json:"monthly_tokens,omitzero"`
	MonthlyRequests   int64   `json:"monthly_requests,omitzero"`
	// MonthlyBudget is the most the requests of a UTC month may cost, in
	// the catalog's currency (JSON: a decimal such as "25.00").
	MonthlyBudget Money `json:"monthly_budget,omitzero"`
}

// MinRequestsPerSecond is the lowest request rate a key or plan may set
// (other than 0, no rate limit): one request per 1000 s. Below it the
// bucket's refill time and the rate-limit headers run to years; a key meant
// to make that few requests wants a monthly_requests quota instead.
const MinRequestsPerSecond = 0.001

// Over returns l with each unset (zero) field taken from base: a key's own
// limits win, field by field, over those of its plan.
func (l Limits) Over(base Limits) Limits {
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = base.RequestsPerSecond
	}
	if l.Burst == 0 {
		l.Burst = base.Burst
	}
	if l.TokensPerMinute == 0 {
		l.TokensPerMinute = base.TokensPerMinute
	}
	if l.MaxConcurrent == 0 {
		l.MaxConcurrent = base.MaxConcurrent
	}
	if l.MonthlyTokens == 0 {
		l.MonthlyTokens = base.MonthlyTokens
	}
	if l.MonthlyRequests == 0 {
		l.MonthlyRequests = base.MonthlyRequests
	}
	if l.MonthlyBudget == 0 {
		l.MonthlyBudget = base.MonthlyBudget
	}
	return l
}
