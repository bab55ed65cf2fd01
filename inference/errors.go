package inference

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrBusy means Ollama refused the request because its queue is full; the
// caller may retry later.
//
//lint:ignore ST1005 Ollama is a name.
var ErrBusy = errors.New("Ollama is busy (its request queue is full)")

// InvalidError is a request that cannot be sent as it is. Field names the
// JSON field at fault.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// UnknownModelError is a public model name the catalog does not have.
type UnknownModelError struct{ Name string }

func (e *UnknownModelError) Error() string {
	return "model " + quote(e.Name) + " is not in the catalog (GET /models lists them)"
}

// UnknownTaskError is a predict task the catalog does not have.
type UnknownTaskError struct{ Name string }

func (e *UnknownTaskError) Error() string {
	return "task " + quote(e.Name) + " is not in the catalog"
}

// UnreachableError means Ollama could not be reached at URL.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("Ollama at %s is not reachable", e.URL)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// TimeoutError means Ollama accepted the connection but did not answer in time.
type TimeoutError struct {
	URL   string
	After time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("Ollama at %s did not answer within %s", e.URL, e.After)
}

// ModelMissingError means Ollama does not have the model the catalog maps to.
type ModelMissingError struct{ Ollama string }

func (e *ModelMissingError) Error() string {
	return "model " + quote(e.Ollama) + " is not installed in Ollama; run: ollama pull " + e.Ollama
}

// UpstreamError is any other failure reported by Ollama: an error status, an
// error line in the middle of a stream, a stream cut before its final chunk,
// or an answer that is not what was asked for. Message is safe to show.
type UpstreamError struct {
	Status  int // Ollama's HTTP status, 0 if it did not send one
	Message string
}

func (e *UpstreamError) Error() string {
	if e.Status != 0 {
		return "Ollama failed (" + strconv.Itoa(e.Status) + "): " + e.Message
	}
	return "Ollama failed: " + e.Message
}

func quote(s string) string { return strconv.Quote(s) }
