package auth

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by this package. None of them, nor any error wrapping them
// here, ever contains a key secret.
var (
	// ErrMalformed: the presented string is not a Tollgate key (prefix,
	// length, alphabet or checksum). No lookup was made.
	ErrMalformed = errors.New("auth: malformed key")
	// ErrUnknown: the key is well formed but no such key exists.
	ErrUnknown = errors.New("auth: unknown key")
	// ErrExpired: the key, or this secret of it after a rotation's grace
	// period, has expired.
	ErrExpired = errors.New("auth: key expired")
	// ErrRevoked: the key has been revoked.
	ErrRevoked = errors.New("auth: key revoked")
	// ErrNotFound: no key has the given id (management operations).
	ErrNotFound = errors.New("auth: key not found")
	// ErrInvalid: input to a management operation is invalid. The concrete
	// error is a *FieldError naming the field.
	ErrInvalid = errors.New("auth: invalid input")
	// ErrSuperseded: a self-rotation presented a secret that is not the
	// key's current one in the store: a rotation, here or on another
	// instance, has replaced it.
	ErrSuperseded = errors.New("auth: the secret is not the key's current one")
)

// RotateLimitError refuses a self-rotation: the key has already rotated
// itself Limit times within Window. RetryAfter is when it may again.
type RotateLimitError struct {
	Limit      int
	Window     time.Duration
	RetryAfter time.Duration
}

func (e *RotateLimitError) Error() string {
	return fmt.Sprintf("auth: the key rotated itself %d times within %s; retry in %s", e.Limit, e.Window, e.RetryAfter)
}

// FieldError says which field of a create or update request is invalid and
// why. errors.Is(err, ErrInvalid) is true for every *FieldError.
type FieldError struct {
	Field  string // e.g. "name", "scopes", "expires_at"
	Reason string // human readable, safe to show to the caller
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("auth: invalid %s: %s", e.Field, e.Reason)
}

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
