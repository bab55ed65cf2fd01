package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"tollgate"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// KeyManager creates and changes keys; *auth.Keys satisfies it.
type KeyManager interface {
	Create(ctx context.Context, actor string, spec auth.Spec) (auth.Key, string, error)
	List(ctx context.Context) ([]auth.Key, error)
	Get(ctx context.Context, id string) (auth.Key, error)
	Revoke(ctx context.Context, actor, id string) (auth.Key, error)
	Rotate(ctx context.Context, actor, id string, grace time.Duration) (auth.Key, string, error)
	RotateSelf(ctx context.Context, id, secret string, grace time.Duration) (auth.Key, string, error)
	// RotateSelfHash is RotateSelf for a dashboard session, which holds the
	// hash of the secret it signed in with, not the secret.
	RotateSelfHash(ctx context.Context, id, hash string, grace time.Duration) (auth.Key, string, error)
	Update(ctx context.Context, actor, id string, patch auth.Patch) (auth.Key, error)
}

// Grace periods for rotation: the default, and the most a key holder may ask
// for when rotating its own key (an admin is not capped).
const (
	DefaultRotateGrace = 24 * time.Hour
	MaxSelfRotateGrace = 7 * 24 * time.Hour
)

// createdKey is a key plus its secret, returned once.
type createdKey struct {
	Key string `json:"key"` // the secret: shown here once, stored nowhere
	// WebhookSecret signs the key's job callbacks (Standard Webhooks);
	// shown here once, rotatable by the key (absent when jobs are off).
	WebhookSecret string   `json:"webhook_secret,omitempty"`
	Notice        string   `json:"notice"`
	Info          auth.Key `json:"info"`
}

type keyList struct {
	Keys []auth.Key `json:"keys"`
}

type createKeyRequest struct {
	Name      string      `json:"name"`
	Scopes    []string    `json:"scopes"`
	Models    []string    `json:"models"`
	Plan      string      `json:"plan"`
	AccountID string      `json:"account_id"`
	Limits    auth.Limits `json:"limits"`
	ExpiresAt *time.Time  `json:"expires_at"`
	ExpiresIn string      `json:"expires_in"` // e.g. "720h"
}

type updateKeyRequest struct {
	Name      *string      `json:"name"`
	Scopes    *[]string    `json:"scopes"`
	Models    *[]string    `json:"models"`
	Plan      *string      `json:"plan"`
	AccountID *string      `json:"account_id"` // "" detaches the key from its account
	Limits    *auth.Limits `json:"limits"`
	ExpiresAt *time.Time   `json:"expires_at"`
}

type rotateRequest struct {
	Grace string `json:"grace"` // e.g. "24h"; "0s" retires the old secret at once
}

const shownOnce = "store this key now: Tollgate keeps only its hash and cannot show it again"

// keyError maps the auth package's management errors.
func keyError(err error) error {
	var fe *auth.FieldError
	var limit *auth.RotateLimitError
	switch {
	case errors.As(err, &fe):
		return badRequest("field %q %s", fe.Field, fe.Reason)
	case errors.Is(err, auth.ErrNotFound):
		return tollgate.Errorf(tollgate.CodeKeyNotFound, "no key with that id")
	case errors.Is(err, auth.ErrRevoked):
		return tollgate.Errorf(tollgate.CodeKeyAlreadyRevoked, "the key is revoked and cannot be rotated")
	case errors.Is(err, auth.ErrSuperseded):
		return tollgate.Errorf(tollgate.CodeSupersededKey, "this secret has been replaced by a rotation and may not rotate the key; rotate with the key's current secret")
	case errors.As(err, &limit):
		return &tollgate.Error{Code: tollgate.CodeRateLimited, RetryAfter: limit.RetryAfter,
			Message: fmt.Sprintf("this key has rotated itself %d times within %s, the most allowed; retry in %d s",
				limit.Limit, shortDuration(limit.Window), retrySeconds(limit.RetryAfter))}
	}
	return err
}

// shortDuration drops a Duration's zero tails: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (s *server) checkPlan(plan string) error {
	if plan == "" {
		return nil
	}
	if _, ok := s.gw.Catalog().Plans[plan]; !ok {
		return badRequest("field \"plan\": no plan %q in models.yaml", plan)
	}
	return nil
}

func scopesOf(names []string) ([]auth.Scope, error) {
	out := make([]auth.Scope, 0, len(names))
	for _, n := range names {
		sc := auth.Scope(n)
		if !sc.Valid() {
			return nil, badRequest("field \"scopes\": unknown scope %q (want generate, embed, predict or admin)", n)
		}
		out = append(out, sc)
	}
	return out, nil
}

func (r *createKeyRequest) spec(now time.Time) (auth.Spec, error) {
	spec := auth.Spec{Name: r.Name, Models: r.Models, Plan: r.Plan, Account: r.AccountID, Limits: r.Limits}
	var err error
	if r.Scopes != nil {
		if spec.Scopes, err = scopesOf(r.Scopes); err != nil {
			return spec, err
		}
	}
	switch {
	case r.ExpiresAt != nil && r.ExpiresIn != "":
		return spec, badRequest("send either \"expires_at\" or \"expires_in\", not both")
	case r.ExpiresAt != nil:
		spec.ExpiresAt = *r.ExpiresAt
	case r.ExpiresIn != "":
		d, err := time.ParseDuration(r.ExpiresIn)
		if err != nil || d <= 0 {
			return spec, badRequest("field \"expires_in\" must be a positive duration like \"720h\"")
		}
		spec.ExpiresAt = now.Add(d)
	}
	return spec, nil
}

func parseGrace(s string, max time.Duration) (time.Duration, error) {
	if s == "" {
		return DefaultRotateGrace, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, badRequest("field \"grace\" must be a duration like \"24h\" (0s ends the old key at once)")
	}
	if max > 0 && d > max {
		return 0, badRequest("field \"grace\" may be at most %s", max)
	}
	return d, nil
}

// decodeOptional decodes a body that may be absent.
func decodeOptional(c *gin.Context, v any) error {
	if c.Request.ContentLength == 0 {
		return nil
	}
	return decodeJSON(c, v)
}
