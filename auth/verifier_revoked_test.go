package auth_test

// Safety net for revocation across instances: a key revoked by another
// instance sharing the database (so this Verifier's cache was never told)
// stops working here once its cache entry is older than CacheTTL, through
// Verify and through VerifyKnown alike. Within the TTL the cached key may
// still pass: that is the documented bound, and not asserted either way.

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/storage/sqlite"
)

const revokedTTL = 10 * time.Second

// revokedElsewhere returns a Verifier with secret's key in its cache, and
// that key revoked in the database behind the Verifier's back, as another
// instance would.
func revokedElsewhere(t *testing.T) (*auth.Verifier, *authtest.Clock, string) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	clock := authtest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	v := auth.NewVerifier(db, auth.VerifierOptions{CacheTTL: revokedTTL, Now: clock.Now})
	key, secret, err := auth.NewKeys(db, v, clock.Now).Create(ctx, auth.ActorCLI, auth.Spec{Name: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, secret); err != nil {
		t.Fatalf("Verify before the revocation: %v", err)
	}
	// Straight to the store: this instance's Keys (which would invalidate
	// v's cache) is not involved.
	entry := auth.AuditEntry{Time: clock.Now(), Actor: auth.ActorCLI, Action: auth.ActionRevoke, KeyID: key.ID}
	if _, err := db.RevokeKey(ctx, key.ID, clock.Now(), entry); err != nil {
		t.Fatalf("revoking in the store: %v", err)
	}
	clock.Advance(time.Second)
	_, _ = v.Verify(ctx, secret) // within the TTL: either answer is allowed
	_, _ = v.VerifyKnown(context.Background(), secret)
	return v, clock, secret
}

func TestVerifySeesRevocationFromAnotherInstanceAfterTTL(t *testing.T) {
	v, clock, secret := revokedElsewhere(t)
	clock.Advance(revokedTTL) // the entry is now older than the TTL
	if k, err := v.Verify(context.Background(), secret); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("Verify after CacheTTL = key %q, %v; want ErrRevoked", k.ID, err)
	}
}

func TestVerifyKnownSeesRevocationFromAnotherInstanceAfterTTL(t *testing.T) {
	v, clock, secret := revokedElsewhere(t)
	clock.Advance(revokedTTL)
	if k, err := v.VerifyKnown(context.Background(), secret); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("VerifyKnown after CacheTTL = key %q, %v; want ErrRevoked: a known secret is still verified in full", k.ID, err)
	}
}
