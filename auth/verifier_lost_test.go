package auth

import (
	"testing"
	"time"
)

// A lost change notification: InvalidateAll drops what is cached and
// ShortenCache makes what is cached next trusted for less, until restored.
func TestInvalidateAllAndShortenCache(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: 10 * time.Second})
	f.verify(t, f.secret, nil)
	f.verify(t, f.secret, nil)
	if n := f.store.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d, want 1", n)
	}
	f.v.InvalidateAll()
	f.v.ShortenCache(time.Second)
	f.verify(t, f.secret, nil)
	if n := f.store.lookups.Load(); n != 2 {
		t.Fatalf("lookups after InvalidateAll = %d, want 2", n)
	}
	f.clock.Advance(time.Second)
	f.verify(t, f.secret, nil)
	if n := f.store.lookups.Load(); n != 3 {
		t.Fatalf("lookups 1 s later with a shortened cache = %d, want 3", n)
	}
	f.v.ShortenCache(0)
	f.clock.Advance(time.Second) // the entry cached while shortened goes stale
	f.verify(t, f.secret, nil)
	f.clock.Advance(5 * time.Second)
	f.verify(t, f.secret, nil)
	if n := f.store.lookups.Load(); n != 4 {
		t.Fatalf("lookups with the cache restored = %d, want 4", n)
	}
}
