package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for VerifierOptions.
const (
	DefaultCacheTTL    = 10 * time.Second
	DefaultNegativeTTL = 2 * time.Second
	DefaultMaxEntries  = 100_000
	DefaultKnownTTL    = 24 * time.Hour
)

// VerifierOptions configure a Verifier. The zero value gives the defaults.
type VerifierOptions struct {
	// CacheTTL is how long a looked-up key is trusted without asking the
	// store again; it bounds how long a revocation or rotation made on
	// another instance takes to be seen here. 0 means DefaultCacheTTL; a
	// negative value turns the cache off.
	CacheTTL time.Duration
	// NegativeTTL is how long "no such key" is remembered for a well-formed
	// secret. 0 means DefaultNegativeTTL; negative turns it off.
	NegativeTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// KnownTTL is how long after its last successful verification a
	// secret's hash stays known to be good, for VerifyKnown. 0 means
	// DefaultKnownTTL; negative keeps none (only the cache vouches).
	KnownTTL time.Duration
	// MaxEntries bounds each of the positive and the negative cache and the
	// known hashes. 0 means DefaultMaxEntries.
	MaxEntries int
	// LastUsed receives FlushLastUsed's writes. nil means the
	// CredentialStore, if it is also a LastUsedStore; otherwise last-used
	// times are dropped.
	LastUsed LastUsedStore
	// OnFlushError, if set, is told about failed periodic flushes in Run.
	OnFlushError func(error)
	// FeedDownTTL replaces CacheTTL and NegativeTTL (when shorter) while a
	// KeyChangeFeed is down (FeedDown until FeedUp). 0 means
	// DefaultFeedDownTTL.
	FeedDownTTL time.Duration
}

// Verifier checks presented secrets. A successful lookup is cached by the
// secret's SHA-256 for CacheTTL; revocation, key expiry and a rotated
// secret's grace expiry are checked against the clock on every call, so a
// cached key still stops working exactly on time. Concurrent misses for the
// same secret share one store lookup. Last-used times are kept in memory
// and written by FlushLastUsed or Run, never per request.
//
// A Verifier is safe for concurrent use.
type Verifier struct {
	store        CredentialStore
	lastUsed     LastUsedStore
	now          func() time.Time
	ttl, negTTL  int64 // nanoseconds; <= 0: do not cache
	knownTTL     int64 // nanoseconds; <= 0: keep no known hashes
	max          int
	onFlushError func(error)
	feedDownTTL  int64       // nanoseconds; the lifetime while feedDown
	feedDown     atomic.Bool // a KeyChangeFeed may be missing changes

	mu  sync.RWMutex
	pos map[[32]byte]*entry
	neg map[[32]byte]int64 // hash -> unix nanos until which it is unknown
	gen uint64             // bumped by Invalidate; older loads are not cached
	// short, when positive, caps the cache lifetime (nanoseconds) while
	// change notifications from other replicas may be lost
	short atomic.Int64
	// known: hash -> unix nanos of its latest successful verification
	// (refreshed at most every knownTTL/64), kept for knownTTL
	known map[[32]byte]int64

	sfMu  sync.Mutex
	calls map[[32]byte]*call

	usedMu  sync.Mutex
	pending map[string]int64 // last-used of entries that left the cache
}

// entry is one cached secret. key and secretExpires never change once the
// entry is shared; freshUntil is written under Verifier.mu before the entry
// enters the map.
type entry struct {
	key           Key
	secretExpires time.Time
	freshUntil    int64
	used          atomic.Int64 // unix nanos of the latest successful use, 0 once flushed
}

// call is one in-flight store lookup that concurrent misses wait for.
type call struct {
	done chan struct{}
	e    *entry
	err  error
}

var errLookupAborted = errors.New("auth: key lookup aborted")

// NewVerifier returns a Verifier that looks keys up in store.
func NewVerifier(store CredentialStore, opts VerifierOptions) *Verifier {
	v := &Verifier{
		store:        store,
		lastUsed:     opts.LastUsed,
		now:          opts.Now,
		ttl:          int64(orDefault(opts.CacheTTL, DefaultCacheTTL)),
		negTTL:       int64(orDefault(opts.NegativeTTL, DefaultNegativeTTL)),
		knownTTL:     int64(orDefault(opts.KnownTTL, DefaultKnownTTL)),
		max:          opts.MaxEntries,
		onFlushError: opts.OnFlushError,
		feedDownTTL:  int64(orDefault(opts.FeedDownTTL, DefaultFeedDownTTL)),
		pos:          make(map[[32]byte]*entry),
		neg:          make(map[[32]byte]int64),
		known:        make(map[[32]byte]int64),
		calls:        make(map[[32]byte]*call),
		pending:      make(map[string]int64),
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.max <= 0 {
		v.max = DefaultMaxEntries
	}
	if v.lastUsed == nil {
		v.lastUsed, _ = store.(LastUsedStore)
	}
	return v
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Verify returns the key that secret belongs to, or an error: ErrMalformed
// (no lookup made), ErrUnknown, ErrRevoked, ErrExpired (the key, or this
// secret after a rotation's grace period), ctx's error, or a wrapped store
// error. On error the Key is zero. Errors never contain the secret.
//
// The returned Key's slices are shared with the cache and must not be
// modified.
func (v *Verifier) Verify(ctx context.Context, secret string) (Key, error) {
	h, err := hashChecked(secret)
	if err != nil {
		return Key{}, err
	}
	return v.verify(ctx, h)
}

// VerifyHash is Verify for a secret known only by its Hash (hex SHA-256),
// as a dashboard session keeps it: the same cache, the same checks of
// revocation, expiry and a rotated secret's grace. A string that is not a
// hex SHA-256 gives ErrMalformed.
func (v *Verifier) VerifyHash(ctx context.Context, hash string) (Key, error) {
	var h [32]byte
	if n, err := hex.Decode(h[:], []byte(hash)); err != nil || n != len(h) || len(hash) != 2*len(h) {
		return Key{}, ErrMalformed
	}
	return v.verify(ctx, h)
}

// verify is Verify for a well-formed secret's hash.
func (v *Verifier) verify(ctx context.Context, h [32]byte) (Key, error) {
	now := v.now()
	n := now.UnixNano()

	var unknownUntil int64
	v.mu.RLock()
	e, hit := v.pos[h]
	if !hit {
		unknownUntil = v.neg[h]
	}
	knownAt := v.known[h]
	v.mu.RUnlock()
	if !hit || n >= e.freshUntil {
		if n < unknownUntil {
			return Key{}, ErrUnknown
		}
		var err error
		if e, err = v.load(ctx, h); err != nil {
			return Key{}, err
		}
	}
	return v.admitKnown(e, h, now, knownAt)
}

// admitKnown is admit, noting a success in the known hashes (at most every
// knownTTL/64, so a busy key rarely takes the write lock).
func (v *Verifier) admitKnown(e *entry, h [32]byte, now time.Time, knownAt int64) (Key, error) {
	k, err := admit(e, now)
	if err != nil || v.knownTTL <= 0 {
		return k, err
	}
	if n := now.UnixNano(); n-knownAt >= v.knownTTL/64 {
		v.mu.Lock()
		if _, ok := v.known[h]; !ok && len(v.known) >= v.max {
			shrink(v.known, v.max, func(at int64) bool { return n-at >= v.knownTTL }, nil)
		}
		v.known[h] = n
		v.mu.Unlock()
	}
	return k, nil
}

// VerifyKnown is Verify for secrets known to be good: ones fresh in the
// cache or verified successfully within KnownTTL. Any other secret
// gets ErrMalformed or ErrUnknown without a lookup. It lets a client whose
// address is throttled for others' failures (a NAT, a platform's shared
// egress) keep using a key it has been using, while a guesser on the same
// address reaches neither the store nor a verdict. A known secret is
// verified in full, so a revocation, expiry or rotation still applies.
func (v *Verifier) VerifyKnown(ctx context.Context, secret string) (Key, error) {
	h, err := hashChecked(secret)
	if err != nil {
		return Key{}, err
	}
	n := v.now().UnixNano()
	v.mu.RLock()
	e, cached := v.pos[h]
	at, ok := v.known[h]
	v.mu.RUnlock()
	if !(cached && n < e.freshUntil) && (!ok || n-at >= v.knownTTL) {
		return Key{}, ErrUnknown
	}
	return v.verify(ctx, h)
}

// hashChecked checks secret's format and returns its SHA-256, the cache key,
// without allocating.
func hashChecked(secret string) ([32]byte, error) {
	if err := CheckFormat(secret); err != nil {
		return [32]byte{}, err
	}
	var b [SecretLen]byte
	copy(b[:], secret)
	return sha256.Sum256(b[:]), nil
}

// admit checks a found secret against the clock and records its use.
func admit(e *entry, now time.Time) (Key, error) {
	if err := e.key.Usable(now); err != nil {
		return Key{}, err
	}
	if !e.secretExpires.IsZero() && !now.Before(e.secretExpires) {
		return Key{}, ErrExpired
	}
	n := now.UnixNano()
	for {
		old := e.used.Load()
		if old >= n || e.used.CompareAndSwap(old, n) {
			break
		}
	}
	return e.key, nil
}

// load asks the store for hash h, sharing the lookup with concurrent callers.
func (v *Verifier) load(ctx context.Context, h [32]byte) (*entry, error) {
	for {
		v.sfMu.Lock()
		c, waiting := v.calls[h]
		if !waiting {
			c = &call{done: make(chan struct{}), err: errLookupAborted}
			v.calls[h] = c
			v.sfMu.Unlock()
			v.fetch(ctx, h, c)
			return c.e, c.err
		}
		v.sfMu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if isContextErr(c.err) && ctx.Err() == nil {
			continue // the caller that did the lookup gave up, not this one
		}
		return c.e, c.err
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// fetch performs call c's lookup and caches the outcome.
func (v *Verifier) fetch(ctx context.Context, h [32]byte, c *call) {
	v.mu.RLock()
	gen := v.gen
	v.mu.RUnlock()
	defer func() {
		v.sfMu.Lock()
		if v.calls[h] == c {
			delete(v.calls, h)
		}
		v.sfMu.Unlock()
		close(c.done)
	}()
	cred, err := v.store.Credential(ctx, hex.EncodeToString(h[:]))
	switch {
	case err == nil:
		c.e, c.err = &entry{key: cred.Key, secretExpires: cred.SecretExpiresAt}, nil
		v.cache(h, c.e, gen)
	case errors.Is(err, ErrUnknown):
		c.err = ErrUnknown
		v.cacheUnknown(h, gen)
	case isContextErr(err):
		c.err = err
	default:
		c.err = fmt.Errorf("auth: look up key: %w", err)
	}
}

// cache stores e for hash h unless an Invalidate ran since gen.
func (v *Verifier) cache(h [32]byte, e *entry, gen uint64) {
	ttl := v.cacheTTL()
	if s := v.short.Load(); s > 0 {
		ttl = min(ttl, s)
	}
	v.insert(ttl, gen, func(n int64) {
		e.freshUntil = n + ttl
		if old, ok := v.pos[h]; ok {
			v.retire(old)
		} else if len(v.pos) >= v.max {
			shrink(v.pos, v.max, func(o *entry) bool { return n >= o.freshUntil }, v.retire)
		}
		v.pos[h] = e
		delete(v.neg, h)
	})
}

// cacheUnknown remembers that hash h has no key, unless an Invalidate ran
// since gen.
func (v *Verifier) cacheUnknown(h [32]byte, gen uint64) {
	negTTL := v.negativeTTL()
	v.insert(negTTL, gen, func(n int64) {
		if _, ok := v.neg[h]; !ok && len(v.neg) >= v.max {
			shrink(v.neg, v.max, func(until int64) bool { return n >= until }, nil)
		}
		v.neg[h] = n + negTTL
	})
}

// insert runs fn with the cache locked for writing and the current time in
// unix nanoseconds, unless caching is off (ttl <= 0) or an Invalidate ran
// since gen.
func (v *Verifier) insert(ttl int64, gen uint64, fn func(now int64)) {
	if ttl <= 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gen == gen {
		fn(v.now().UnixNano())
	}
}

// shrink makes room in a full cache map: it drops stale values and, if that
// frees less than a quarter, arbitrary ones down to three quarters of max,
// so the O(len) sweep runs at most once per max/4 insertions.
func shrink[V any](m map[[32]byte]V, max int, stale func(V) bool, drop func(V)) {
	remove := func(h [32]byte, val V) {
		delete(m, h)
		if drop != nil {
			drop(val)
		}
	}
	for h, val := range m {
		if stale(val) {
			remove(h, val)
		}
	}
	for h, val := range m { // map order is random enough for eviction
		if len(m) <= max*3/4 {
			break
		}
		remove(h, val)
	}
}

// retire keeps the last-used time of an entry leaving the cache.
// v.mu must be held for writing.
func (v *Verifier) retire(e *entry) {
	if u := e.used.Swap(0); u != 0 {
		v.usedMu.Lock()
		mergeUsed(v.pending, e.key.ID, u)
		v.usedMu.Unlock()
	}
}

func mergeUsed(m map[string]int64, id string, n int64) {
	if n > m[id] {
		m[id] = n
	}
}

// Invalidate drops every cached entry of key id, and makes lookups already
// in flight not cache their result, so that a revocation, rotation or update
// made on this instance applies to the very next Verify. Other instances see
// the change within their CacheTTL, or at once through a KeyChangeFeed.
func (v *Verifier) Invalidate(id string) {
	v.mu.Lock()
	v.gen++
	for h, e := range v.pos {
		if e.key.ID == id {
			delete(v.pos, h)
			v.retire(e)
		}
	}
	v.mu.Unlock()
	v.sfMu.Lock()
	clear(v.calls) // new callers must not join a lookup that began before
	v.sfMu.Unlock()
}

// InvalidateAll drops every cached key and every remembered unknown
// secret, as Invalidate does for one key: for when changes made elsewhere
// may have been missed (a lost notification connection).
func (v *Verifier) InvalidateAll() {
	v.mu.Lock()
	v.gen++
	for h, e := range v.pos {
		delete(v.pos, h)
		v.retire(e)
	}
	clear(v.neg)
	v.mu.Unlock()
	v.sfMu.Lock()
	clear(v.calls)
	v.sfMu.Unlock()
}

// ShortenCache caps the cache lifetime at d while change notifications
// from other replicas may be lost; 0 restores CacheTTL. Entries cached
// before keep their lifetime: call InvalidateAll too.
func (v *Verifier) ShortenCache(d time.Duration) { v.short.Store(int64(d)) }

// forget drops a remembered "unknown" for secret, which has just been
// issued, so that it works at once on this instance.
func (v *Verifier) forget(secret string) {
	h := sha256.Sum256([]byte(secret))
	v.mu.Lock()
	delete(v.neg, h)
	v.mu.Unlock()
}

// FlushLastUsed writes the last-used times gathered since the previous
// flush, one store call for all keys. On failure the times are kept for the
// next flush and the error is returned.
func (v *Verifier) FlushLastUsed(ctx context.Context) error {
	batch := v.takeUsed()
	if len(batch) == 0 || v.lastUsed == nil {
		return nil
	}
	times := make(map[string]time.Time, len(batch))
	for id, n := range batch {
		times[id] = time.Unix(0, n).UTC()
	}
	if err := v.lastUsed.TouchLastUsed(ctx, times); err != nil {
		v.usedMu.Lock()
		for id, n := range batch {
			mergeUsed(v.pending, id, n)
		}
		v.usedMu.Unlock()
		return fmt.Errorf("auth: flush last-used times: %w", err)
	}
	return nil
}

// takeUsed collects and resets every recorded use.
func (v *Verifier) takeUsed() map[string]int64 {
	batch := make(map[string]int64)
	v.mu.RLock()
	for _, e := range v.pos {
		if u := e.used.Swap(0); u != 0 {
			mergeUsed(batch, e.key.ID, u)
		}
	}
	v.mu.RUnlock()
	v.usedMu.Lock()
	for id, n := range v.pending {
		mergeUsed(batch, id, n)
	}
	clear(v.pending)
	v.usedMu.Unlock()
	return batch
}

// Run flushes last-used times every interval (a minute if every <= 0) until
// ctx is done, then flushes once more with a fresh 5-second deadline and
// returns that flush's error. Failed periodic flushes go to
// VerifierOptions.OnFlushError and are retried on the next tick.
func (v *Verifier) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return v.FlushLastUsed(fctx)
		case <-t.C:
			if err := v.FlushLastUsed(ctx); err != nil && ctx.Err() == nil && v.onFlushError != nil {
				v.onFlushError(err)
			}
		}
	}
}
