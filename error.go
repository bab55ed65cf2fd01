package tollgate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Code is a stable, machine-readable error code. Each code has exactly one
// HTTP status (Status); README's error table and /openapi.json list exactly
// the codes in Codes, and a test keeps the three in step.
type Code string

// The error codes, by status.
const (
	CodeInvalidRequest      Code = "invalid_request"            // 400: the message names the field
	CodeMissingKey          Code = "missing_api_key"            // 401
	CodeInvalidKey          Code = "invalid_api_key"            // 401
	CodeKeyExpired          Code = "key_expired"                // 401
	CodeKeyRevoked          Code = "key_revoked"                // 401
	CodeKeyInQuery          Code = "key_in_query"               // 401
	CodeBudgetExceeded      Code = "budget_exceeded"            // 402: a monthly money budget is spent
	CodeQuotaExceeded       Code = "quota_exceeded"             // 402
	CodeInsufficientScope   Code = "insufficient_scope"         // 403
	CodeModelNotAllowed     Code = "model_not_allowed"          // 403
	CodePlanNotFound        Code = "plan_not_found"             // 403: the key's plan is not in the catalog
	CodeSupersededKey       Code = "superseded_key"             // 403
	CodeCSRFFailed          Code = "csrf_failed"                // 403: a dashboard change without its session's CSRF token
	CodeAccountNotFound     Code = "account_not_found"          // 404
	CodeNotFound            Code = "not_found"                  // 404: no such route
	CodeModelNotFound       Code = "model_not_found"            // 404
	CodeTaskNotFound        Code = "task_not_found"             // 404
	CodeKeyNotFound         Code = "key_not_found"              // 404
	CodeJobNotFound         Code = "job_not_found"              // 404: no such job, or another key's
	CodeMethodNotAllowed    Code = "method_not_allowed"         // 405
	CodeBodyTimeout         Code = "body_timeout"               // 408
	CodeKeyAlreadyRevoked   Code = "key_already_revoked"        // 409: a revoked key cannot be rotated
	CodeJobFinished         Code = "job_already_finished"       // 409: a finished job cannot be cancelled
	CodeIdempotencyInUse    Code = "idempotency_key_in_use"     // 409: a request with this Idempotency-Key is still running
	CodeBodyTooLarge        Code = "body_too_large"             // 413
	CodeCatalogInvalid      Code = "catalog_invalid"            // 422: a reload found models.yaml broken; the running catalog stays
	CodeIdempotencyReused   Code = "idempotency_key_reused"     // 422: the Idempotency-Key was used for a different request
	CodeRateLimited         Code = "rate_limited"               // 429
	CodeTokensPerMinute     Code = "tokens_per_minute_exceeded" // 429
	CodeTooManyConcurrent   Code = "too_many_concurrent"        // 429
	CodeTooManyAuthFailures Code = "too_many_auth_failures"     // 429
	CodeClientClosed        Code = "client_closed_request"      // 499: logs and usage records only
	CodeInternal            Code = "internal_error"             // 500
	CodeBackendUnreachable  Code = "backend_unreachable"        // 502
	CodeModelNotInstalled   Code = "model_not_installed"        // 502
	CodeBackendError        Code = "backend_error"              // 502
	CodeOverloaded          Code = "overloaded"                 // 503
	CodeDatabaseUnavailable Code = "database_unavailable"       // 503: the database server (PostgreSQL) is not reachable
	CodeMeteringUnavailable Code = "metering_unavailable"       // 503
	CodeBackendTimeout      Code = "backend_timeout"            // 504: no first byte from Ollama in time
	CodeTimeout             Code = "timeout"                    // 504: the request's own deadline passed
)

// StatusClientClosed is nginx's 499: the client went away before the answer.
const StatusClientClosed = 499

// statuses is the one code -> HTTP status table.
var statuses = map[Code]int{
	CodeInvalidRequest:      400,
	CodeMissingKey:          401,
	CodeInvalidKey:          401,
	CodeKeyExpired:          401,
	CodeKeyRevoked:          401,
	CodeKeyInQuery:          401,
	CodeBudgetExceeded:      402,
	CodeQuotaExceeded:       402,
	CodeInsufficientScope:   403,
	CodeModelNotAllowed:     403,
	CodePlanNotFound:        403,
	CodeSupersededKey:       403,
	CodeCSRFFailed:          403,
	CodeAccountNotFound:     404,
	CodeNotFound:            404,
	CodeModelNotFound:       404,
	CodeTaskNotFound:        404,
	CodeKeyNotFound:         404,
	CodeJobNotFound:         404,
	CodeMethodNotAllowed:    405,
	CodeBodyTimeout:         408,
	CodeKeyAlreadyRevoked:   409,
	CodeJobFinished:         409,
	CodeIdempotencyInUse:    409,
	CodeBodyTooLarge:        413,
	CodeCatalogInvalid:      422,
	CodeIdempotencyReused:   422,
	CodeRateLimited:         429,
	CodeTokensPerMinute:     429,
	CodeTooManyConcurrent:   429,
	CodeTooManyAuthFailures: 429,
	CodeClientClosed:        StatusClientClosed,
	CodeInternal:            500,
	CodeBackendUnreachable:  502,
	CodeModelNotInstalled:   502,
	CodeBackendError:        502,
	CodeOverloaded:          503,
	CodeMeteringUnavailable: 503,
	CodeDatabaseUnavailable: 503,
	CodeBackendTimeout:      504,
	CodeTimeout:             504,
}

// Status returns the HTTP status of code; an unknown code is a 500.
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return 500
}

// Codes lists every error code, sorted by status and then by name.
func Codes() []Code {
	out := make([]Code, 0, len(statuses))
	for c := range statuses {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Code) int {
		if d := a.Status() - b.Status(); d != 0 {
			return d
		}
		if a < b {
			return -1
		}
		return 1
	})
	return out
}

// Error is an error that knows its code: what a client is told. Message is
// written for the client and never holds a secret or an internal detail.
type Error struct {
	Code    Code
	Message string
	// RetryAfter, when positive, is when a retry may succeed (Retry-After).
	RetryAfter time.Duration
	// Final marks a refusal that retrying cannot fix (a spent quota):
	// surfaces say so (x-should-retry: false).
	Final bool
	// Param, when set, is the request field at fault, in the terms of the
	// surface that decoded it (OpenAI's error shape reports it as "param").
	Param string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Coded is implemented by domain errors that know their code without being
// an *Error (for example inference's typed errors).
type Coded interface {
	error
	ErrorCode() Code
}

// ErrorCode returns the code of err: an *Error's or a Coded error's own,
// CodeClientClosed for context.Canceled, CodeTimeout for
// context.DeadlineExceeded, and CodeInternal for anything else (nil too).
func ErrorCode(err error) Code {
	var e *Error
	var c Coded
	switch {
	case err == nil:
		return CodeInternal
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &c):
		return c.ErrorCode()
	case errors.Is(err, context.Canceled):
		return CodeClientClosed
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	}
	return CodeInternal
}

// ErrorMessage returns what a client may be told about err: the message of
// a known error, a generic sentence for an internal one (whose detail
// belongs in the log only).
func ErrorMessage(err error) string {
	var e *Error
	var c Coded
	switch {
	case errors.As(err, &e):
		return e.Message
	case errors.As(err, &c):
		return c.Error()
	case errors.Is(err, context.Canceled):
		return "the client closed the request"
	case errors.Is(err, context.DeadlineExceeded):
		return "the request took too long"
	}
	return "internal error; quote the request id when reporting it"
}

// RetryAfter returns how long a client should wait before retrying err, or
// 0 when err says nothing about it.
func RetryAfter(err error) time.Duration {
	var e *Error
	var r interface{ RetryAfter() time.Duration }
	switch {
	case errors.As(err, &e):
		return e.RetryAfter
	case errors.As(err, &r):
		return r.RetryAfter()
	}
	return 0
}

// IsFinal reports whether err is a refusal that retrying cannot fix.
func IsFinal(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Final
}
