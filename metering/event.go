// Package metering turns every request that reached inference into one usage
// event: who called, which model, how many tokens Ollama counted, what the
// client saw, and what it costs. It prices events in exact integer
// micro-units, records them durably with group commit, keeps in-memory month
// totals for quota checks, and writes reports and exports.
//
// The package imports neither Gin nor storage: the database sits behind the
// small BatchStore interface declared here, which package storage satisfies.
package metering

import (
	"errors"
	"fmt"
	"time"
	"tollgate"
)

// Endpoints a usage event may name: the inference capabilities.
const (
	EndpointGenerate = tollgate.Generate
	EndpointEmbed    = tollgate.Embed
	EndpointPredict  = tollgate.Predict
)

// Event is the usage record of one request that reached inference.
type Event struct {
	// RequestID identifies the request; it is unique, so a retried write
	// never counts the same request twice.
	RequestID string
	// KeyID is the id (never the secret) of the API key that was charged.
	KeyID string
	// AccountID is the account owning the key when the request was made
	// ("" for none). It is stored with the usage row, so that usage stays
	// billed to the account it was made under if the key moves later.
	AccountID string
	// Endpoint is "generate", "embed" or "predict".
	Endpoint tollgate.Capability
	// Model is the public model name the client asked for.
	Model string
	// Surface is the API the request came through: SurfaceNative,
	// SurfaceOpenAI or SurfaceOllama ("" is stored as native).
	Surface string
	// PromptTokens and CompletionTokens are exactly what Ollama counted
	// (prompt_eval_count and eval_count). Embeddings count input tokens as
	// prompt tokens.
	PromptTokens, CompletionTokens int64
	// Status is the HTTP status the client got; 499 when the client went
	// away before the response was complete.
	Status int
	// Latency is the time from receiving the request to the end of the
	// response. It is stored with microsecond precision.
	Latency time.Duration
	// Cost is the price of the request, normally from Price.Cost.
	Cost tollgate.Money
	// Time is when the request was received, in UTC. Stored with nanosecond
	// precision; it decides the month the event counts in.
	Time time.Time
}

// The surfaces a request may come through.
const (
	SurfaceNative = "native" // /generate, /embed, /predict
	SurfaceOpenAI = "openai" // /v1
	SurfaceOllama = "ollama" // /api
)

// SurfaceName is e.Surface, or SurfaceNative when it is unset.
func (e Event) SurfaceName() string {
	if e.Surface == "" {
		return SurfaceNative
	}
	return e.Surface
}

// TotalTokens returns prompt plus completion tokens.
func (e Event) TotalTokens() int64 { return e.PromptTokens + e.CompletionTokens }

// Validate reports why an event cannot be recorded, or nil. The Recorder
// checks every event before queueing it, so one bad event can never make a
// whole batch fail.
func (e Event) Validate() error {
	switch {
	case e.RequestID == "":
		return errors.New("metering: event has no request id")
	case e.KeyID == "":
		return fmt.Errorf("metering: event %q has no key id", e.RequestID)
	case e.Endpoint == "":
		return fmt.Errorf("metering: event %q has no endpoint", e.RequestID)
	case e.Model == "":
		return fmt.Errorf("metering: event %q has no model", e.RequestID)
	case e.PromptTokens < 0 || e.CompletionTokens < 0:
		return fmt.Errorf("metering: event %q has negative token counts (%d, %d)", e.RequestID, e.PromptTokens, e.CompletionTokens)
	case e.Cost < 0:
		return fmt.Errorf("metering: event %q has negative cost %d", e.RequestID, e.Cost)
	case e.Latency < 0:
		return fmt.Errorf("metering: event %q has negative latency %s", e.RequestID, e.Latency)
	case e.Status < 100 || e.Status > 599:
		return fmt.Errorf("metering: event %q has status %d outside 100-599", e.RequestID, e.Status)
	case e.Time.IsZero():
		return fmt.Errorf("metering: event %q has no time", e.RequestID)
	}
	return nil
}

// Totals are summed usage: a key's month so far, or a report group.
type Totals struct {
	// Requests counts requests charged to a request quota: those that did
	// not fail on the gateway's or Ollama's side (status < 500). Tokens and
	// cost count every request.
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	Cost             tollgate.Money
}

// TotalTokens returns prompt plus completion tokens.
func (t Totals) TotalTokens() int64 { return t.PromptTokens + t.CompletionTokens }

// add counts one event into t.
func (t *Totals) add(e Event) {
	if e.Status < 500 {
		t.Requests++
	}
	t.PromptTokens += e.PromptTokens
	t.CompletionTokens += e.CompletionTokens
	t.Cost += e.Cost
}
