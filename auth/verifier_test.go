package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"tollgate/auth/authtest"
)

// fixture: a store holding one key with secret, a clock and a verifier.
type fixture struct {
	store  *memStore
	clock  *authtest.Clock
	v      *Verifier
	key    Key
	secret string
}

func newFixture(t testing.TB, opts VerifierOptions) *fixture {
	t.Helper()
	f := &fixture{store: newMemStore(), clock: newClock()}
	secret, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	f.secret = secret
	f.key = Key{ID: "key_test", Name: "t", Prefix: DisplayPrefix(secret), Scopes: DefaultScopes(), CreatedAt: f.clock.Now()}
	f.store.addKey(f.key, secret, time.Time{})
	if opts.Now == nil {
		opts.Now = f.clock.Now
	}
	f.v = NewVerifier(f.store, opts)
	return f
}

func (f *fixture) verify(t *testing.T, secret string, want error) Key {
	t.Helper()
	k, err := f.v.Verify(context.Background(), secret)
	if !errors.Is(err, want) || (want == nil && err != nil) {
		t.Fatalf("Verify = %v, want %v", err, want)
	}
	if err != nil && k.ID != "" {
		t.Fatalf("Verify returned key %q with error %v", k.ID, err)
	}
	return k
}

func TestVerifyCachesHits(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: 10 * time.Second})
	for i := 0; i < 5; i++ {
		if k := f.verify(t, f.secret, nil); k.ID != f.key.ID {
			t.Fatalf("got key %q", k.ID)
		}
	}
	if n := f.store.lookups.Load(); n != 1 {
		t.Fatalf("store lookups = %d, want 1", n)
	}
	f.clock.Advance(10 * time.Second) // entry is stale exactly at TTL
	f.verify(t, f.secret, nil)
	if n := f.store.lookups.Load(); n != 2 {
		t.Fatalf("store lookups after TTL = %d, want 2", n)
	}
}

func TestVerifyMalformedSkipsStore(t *testing.T) {
	f := newFixture(t, VerifierOptions{})
	f.verify(t, "tg_nope", ErrMalformed)
	last := "x"
	if f.secret[SecretLen-1] == 'x' {
		last = "y" // a change, whatever the random key ends with
	}
	f.verify(t, f.secret[:SecretLen-1]+last, ErrMalformed)
	if n := f.store.lookups.Load(); n != 0 {
		t.Fatalf("store lookups = %d, want 0", n)
	}
}

func TestVerifyUnknownIsCachedBriefly(t *testing.T) {
	f := newFixture(t, VerifierOptions{NegativeTTL: time.Second})
	other, _ := Generate()
	f.verify(t, other, ErrUnknown)
	f.verify(t, other, ErrUnknown)
	if n := f.store.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d, want 1", n)
	}
	f.clock.Advance(time.Second)
	f.verify(t, other, ErrUnknown)
	if n := f.store.lookups.Load(); n != 2 {
		t.Fatalf("lookups after NegativeTTL = %d, want 2", n)
	}
}

func TestVerifyExpiryIsExactEvenWhenCached(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: time.Hour})
	k := f.key
	k.ExpiresAt = f.clock.Now().Add(time.Minute)
	f.store.setKey(k)
	f.verify(t, f.secret, nil)
	f.clock.Advance(time.Minute - time.Nanosecond)
	f.verify(t, f.secret, nil)
	f.clock.Advance(time.Nanosecond)
	f.verify(t, f.secret, ErrExpired)
	if n := f.store.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d, want 1 (expiry decided from the cache)", n)
	}
}

func TestVerifySecretGraceExpiry(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: time.Hour})
	old, _ := Generate()
	f.store.addKey(f.key, old, f.clock.Now().Add(30*time.Second))
	f.verify(t, old, nil)
	f.clock.Advance(30 * time.Second)
	f.verify(t, old, ErrExpired)
	f.verify(t, f.secret, nil)
}

func TestInvalidateMakesRevocationImmediate(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: time.Hour})
	f.verify(t, f.secret, nil)
	k := f.key
	k.RevokedAt = f.clock.Now()
	f.store.setKey(k)
	f.verify(t, f.secret, nil) // still cached: other instances behave so until CacheTTL
	f.v.Invalidate(f.key.ID)
	f.verify(t, f.secret, ErrRevoked)
}

func TestRevocationSeenAfterCacheTTL(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: 5 * time.Second})
	f.verify(t, f.secret, nil)
	k := f.key
	k.RevokedAt = f.clock.Now()
	f.store.setKey(k)
	f.clock.Advance(5 * time.Second)
	f.verify(t, f.secret, ErrRevoked)
}

func TestVerifyStoreErrorNotCached(t *testing.T) {
	f := newFixture(t, VerifierOptions{})
	f.store.lookupErr = errors.New("disk on fire")
	_, err := f.v.Verify(context.Background(), f.secret)
	if err == nil || errors.Is(err, ErrUnknown) {
		t.Fatalf("Verify = %v, want a store error", err)
	}
	f.store.lookupErr = nil
	f.verify(t, f.secret, nil)
}

func TestVerifyCoalescesConcurrentMisses(t *testing.T) {
	f := newFixture(t, VerifierOptions{})
	f.store.block = make(chan struct{})
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.v.Verify(context.Background(), f.secret)
			errs <- err
		}()
	}
	for f.store.lookups.Load() == 0 {
		time.Sleep(time.Millisecond) // wait for the first lookup to start
	}
	close(f.store.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.store.lookups.Load(); got != 1 {
		t.Fatalf("store lookups = %d, want 1", got)
	}
}

func TestWaiterRetriesWhenLeaderGivesUp(t *testing.T) {
	f := newFixture(t, VerifierOptions{})
	f.store.block = make(chan struct{})
	leaderCtx, cancel := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		_, err := f.v.Verify(leaderCtx, f.secret)
		leaderDone <- err
	}()
	for f.store.lookups.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	waiterDone := make(chan error, 1)
	go func() {
		_, err := f.v.Verify(context.Background(), f.secret)
		waiterDone <- err
	}()
	cancel()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v", err)
	}
	close(f.store.block)
	if err := <-waiterDone; err != nil {
		t.Fatalf("waiter: %v", err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	f := newFixture(t, VerifierOptions{MaxEntries: 8})
	for i := 0; i < 100; i++ {
		s, _ := Generate()
		f.store.addKey(Key{ID: "k" + s[3:8]}, s, time.Time{})
		f.verify(t, s, nil)
		unknown, _ := Generate()
		f.verify(t, unknown, ErrUnknown)
	}
	f.v.mu.RLock()
	pos, neg := len(f.v.pos), len(f.v.neg)
	f.v.mu.RUnlock()
	if pos > 8 || neg > 8 {
		t.Fatalf("cache sizes pos=%d neg=%d, want <= 8", pos, neg)
	}
}

func TestFlushLastUsed(t *testing.T) {
	f := newFixture(t, VerifierOptions{MaxEntries: 2})
	ctx := context.Background()
	f.verify(t, f.secret, nil)
	f.clock.Advance(time.Second)
	f.verify(t, f.secret, nil)
	want := f.clock.Now()
	if len(f.store.touched) != 0 {
		t.Fatal("Verify wrote last-used through to the store")
	}
	if err := f.v.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.store.touched[f.key.ID]; !got.Equal(want) {
		t.Fatalf("last used = %v, want %v", got, want)
	}

	// A failed flush keeps the times for the next one, and an entry that
	// leaves the cache keeps its time too.
	f.clock.Advance(time.Second)
	f.verify(t, f.secret, nil)
	want = f.clock.Now()
	f.store.touchErr = errors.New("busy")
	if err := f.v.FlushLastUsed(ctx); err == nil {
		t.Fatal("flush error not reported")
	}
	f.store.touchErr = nil
	f.v.Invalidate(f.key.ID)
	if err := f.v.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.store.touched[f.key.ID]; !got.Equal(want) {
		t.Fatalf("last used after retry = %v, want %v", got, want)
	}
}

func TestRunFlushesOnStop(t *testing.T) {
	f := newFixture(t, VerifierOptions{})
	f.verify(t, f.secret, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.v.Run(ctx, time.Hour) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.store.mu.Lock()
	defer f.store.mu.Unlock()
	if f.store.touched[f.key.ID].IsZero() {
		t.Fatal("Run did not flush at the end")
	}
}

func TestVerifyConcurrentMixed(t *testing.T) {
	f := newFixture(t, VerifierOptions{MaxEntries: 4})
	secrets := []string{f.secret}
	for i := 0; i < 6; i++ {
		s, _ := Generate()
		f.store.addKey(Key{ID: "key_" + s[3:10]}, s, time.Time{})
		secrets = append(secrets, s)
	}
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				s := secrets[(g+i)%len(secrets)]
				if _, err := f.v.Verify(context.Background(), s); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					f.v.Invalidate(f.key.ID)
					_ = f.v.FlushLastUsed(context.Background())
				}
			}
		}()
	}
	wg.Wait()
}

// warmFixture returns a fixture on the real clock whose key is cached.
func warmFixture(b *testing.B) *fixture {
	f := newFixture(b, VerifierOptions{CacheTTL: time.Hour, Now: time.Now})
	if _, err := f.v.Verify(context.Background(), f.secret); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	return f
}

func BenchmarkVerifyCacheHit(b *testing.B) {
	f := warmFixture(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := f.v.Verify(ctx, f.secret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCacheHitParallel(b *testing.B) {
	f := warmFixture(b)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.v.Verify(ctx, f.secret); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkVerifyCacheMiss(b *testing.B) {
	f := newFixture(b, VerifierOptions{CacheTTL: -1, Now: time.Now})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.v.Verify(ctx, f.secret); err != nil {
			b.Fatal(err)
		}
	}
}

// A lookup that began before Invalidate must not put its (possibly
// pre-revocation) answer into the cache.
func TestInvalidateDuringLookupIsNotCached(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: time.Hour})
	f.store.block = make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := f.v.Verify(context.Background(), f.secret)
		done <- err
	}()
	for f.store.lookups.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	f.v.Invalidate(f.key.ID)
	close(f.store.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.store.block = nil
	f.verify(t, f.secret, nil)
	if n := f.store.lookups.Load(); n != 2 {
		t.Fatalf("lookups = %d, want 2 (the first answer was not cached)", n)
	}
}

// TestVerifyKnown: VerifyKnown looks up only secrets known to be good (in
// the cache, or verified within KnownTTL of their latest success), and
// verifies those in full; anything else is ErrUnknown or ErrMalformed with
// no lookup.
func TestVerifyKnown(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, VerifierOptions{CacheTTL: 10 * time.Second, KnownTTL: time.Hour})
	lookups := func(want int64) {
		t.Helper()
		if n := f.store.lookups.Load(); n != want {
			t.Fatalf("store lookups = %d, want %d", n, want)
		}
	}
	other, _ := Generate()
	for _, s := range []string{f.secret, other} {
		if _, err := f.v.VerifyKnown(ctx, s); !errors.Is(err, ErrUnknown) {
			t.Fatalf("VerifyKnown of a secret never verified = %v, want ErrUnknown", err)
		}
	}
	if _, err := f.v.VerifyKnown(ctx, "tg_garbage"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("VerifyKnown of garbage = %v, want ErrMalformed", err)
	}
	lookups(0)

	f.verify(t, f.secret, nil)
	lookups(1)
	if k, err := f.v.VerifyKnown(ctx, f.secret); err != nil || k.ID != f.key.ID {
		t.Fatalf("VerifyKnown of a cached secret = %q, %v", k.ID, err)
	}
	lookups(1)
	// Past the cache lifetime (and out of the cache altogether) a known
	// secret is looked up again, and each success keeps it known.
	for i := range 5 {
		f.clock.Advance(50 * time.Minute)
		f.v.Invalidate(f.key.ID)
		if k, err := f.v.VerifyKnown(ctx, f.secret); err != nil || k.ID != f.key.ID {
			t.Fatalf("VerifyKnown %d after %v = %q, %v", i, 50*time.Minute, k.ID, err)
		}
	}
	lookups(6)
	// A known secret is still checked: a revocation applies.
	k := f.key
	k.RevokedAt = f.clock.Now()
	f.store.setKey(k)
	f.v.Invalidate(k.ID)
	if _, err := f.v.VerifyKnown(ctx, f.secret); !errors.Is(err, ErrRevoked) {
		t.Fatalf("VerifyKnown of a revoked key = %v, want ErrRevoked", err)
	}
	lookups(7)
	// KnownTTL after the latest success, it is no longer known.
	f.clock.Advance(time.Hour)
	f.v.Invalidate(k.ID)
	if _, err := f.v.VerifyKnown(ctx, f.secret); !errors.Is(err, ErrUnknown) {
		t.Fatalf("VerifyKnown an hour after the last success = %v, want ErrUnknown", err)
	}
	lookups(7)
}

// TestKnownHashesBounded: the known hashes stay within MaxEntries however
// many keys succeed.
func TestKnownHashesBounded(t *testing.T) {
	f := newFixture(t, VerifierOptions{MaxEntries: 8})
	for i := range 50 {
		secret, _ := Generate()
		f.store.addKey(Key{ID: fmt.Sprintf("key_%d", i), Prefix: DisplayPrefix(secret), Scopes: DefaultScopes()}, secret, time.Time{})
		f.verify(t, secret, nil)
		f.v.mu.RLock()
		n := len(f.v.known)
		f.v.mu.RUnlock()
		if n > 8 {
			t.Fatalf("%d known hashes, want at most MaxEntries (8)", n)
		}
	}
}
