package inference

import (
	"fmt"
	"strconv"
	"time"

	"tollgate"
)

// ErrBusy means Ollama refused the request because its queue is full; the
// caller may retry later.
var ErrBusy = &tollgate.Error{Code: tollgate.CodeOverloaded, RetryAfter: time.Second,
	Message: "Ollama is busy (its request queue is full); retry shortly"}

// InvalidError is a request that cannot be sent as it is. Field names the
// JSON field at fault.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// ErrorCode is tollgate.CodeInvalidRequest.
func (e *InvalidError) ErrorCode() tollgate.Code { return tollgate.CodeInvalidRequest }

// UnknownModelError is a public model name the catalog does not have.
type UnknownModelError struct{ Name string }

func (e *UnknownModelError) Error() string {
	return "model " + quote(e.Name) + " is not in the catalog (GET /models lists them)"
}

// ErrorCode is tollgate.CodeModelNotFound.
func (e *UnknownModelError) ErrorCode() tollgate.Code { return tollgate.CodeModelNotFound }

// UnknownTaskError is a predict task the catalog does not have.
type UnknownTaskError struct{ Name string }

func (e *UnknownTaskError) Error() string {
	return "task " + quote(e.Name) + " is not in the catalog"
}

// ErrorCode is tollgate.CodeTaskNotFound.
func (e *UnknownTaskError) ErrorCode() tollgate.Code { return tollgate.CodeTaskNotFound }

// UnreachableError means Ollama could not be reached at URL.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("Ollama at %s is not reachable", e.URL)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// ErrorCode is tollgate.CodeBackendUnreachable.
func (e *UnreachableError) ErrorCode() tollgate.Code { return tollgate.CodeBackendUnreachable }

// RetryAfter is how long to give Ollama to come back.
func (e *UnreachableError) RetryAfter() time.Duration { return 5 * time.Second }

// TimeoutError means Ollama accepted the connection but did not answer in time.
type TimeoutError struct {
	URL   string
	After time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("Ollama at %s did not answer within %s", e.URL, e.After)
}

// ErrorCode is tollgate.CodeBackendTimeout.
func (e *TimeoutError) ErrorCode() tollgate.Code { return tollgate.CodeBackendTimeout }

// ModelMissingError means Ollama does not have the model the catalog maps to.
type ModelMissingError struct{ Ollama string }

func (e *ModelMissingError) Error() string {
	return "model " + quote(e.Ollama) + " is not installed in Ollama; run: ollama pull " + e.Ollama
}

// ErrorCode is tollgate.CodeModelNotInstalled.
func (e *ModelMissingError) ErrorCode() tollgate.Code { return tollgate.CodeModelNotInstalled }

// SignError means a request to Ollama could not be signed (WithAuth: the
// key in ~/.ollama/id_ed25519 is missing or unreadable). It is the
// operator's to fix, so it has no code of its own: clients get
// internal_error and the log and /readyz the reason.
type SignError struct{ Err error }

func (e *SignError) Error() string {
	return "signing the request to Ollama (OLLAMA_AUTH): " + e.Err.Error()
}

func (e *SignError) Unwrap() error { return e.Err }

// UpstreamError is any other failure reported by Ollama: an error status, an
// error line in the middle of a stream, a stream cut before its final chunk,
// or an answer that is not what was asked for. Message is safe to show.
type UpstreamError struct {
	Status  int // Ollama's HTTP status, 0 if it did not send one
	Message string
	broken  bool // the connection broke: the backend is unwell
}

func (e *UpstreamError) Error() string {
	if e.Status != 0 {
		return "Ollama failed (" + strconv.Itoa(e.Status) + "): " + e.Message
	}
	return "Ollama failed: " + e.Message
}

// ErrorCode is tollgate.CodeBackendError.
func (e *UpstreamError) ErrorCode() tollgate.Code { return tollgate.CodeBackendError }

func quote(s string) string { return strconv.Quote(s) }
