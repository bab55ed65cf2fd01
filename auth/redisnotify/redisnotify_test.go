package redisnotify_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/auth/redisnotify"
	"tollgate/internal/redistest"
)

// cache records what a Bus does to it.
type cache struct {
	mu    sync.Mutex
	ids   []string
	all   int
	short time.Duration
}

func (c *cache) Invalidate(id string) { c.mu.Lock(); c.ids = append(c.ids, id); c.mu.Unlock() }
func (c *cache) InvalidateAll()       { c.mu.Lock(); c.all++; c.mu.Unlock() }
func (c *cache) ShortenCache(d time.Duration) {
	c.mu.Lock()
	c.short = d
	c.mu.Unlock()
}

func (c *cache) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.ids {
		if x == id {
			return true
		}
	}
	return false
}

func (c *cache) state() (int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all, c.short
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestChangeReachesOtherReplicaWithinASecond(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var caches [3]*cache
	var buses [3]*redisnotify.Bus
	var wg sync.WaitGroup
	for i := range buses {
		caches[i] = &cache{}
		buses[i] = redisnotify.New(rdb, caches[i], redisnotify.Options{Channel: prefix + "keys"})
		wg.Add(1)
		go func(b *redisnotify.Bus) { defer wg.Done(); _ = b.Run(ctx) }(buses[i])
	}
	defer wg.Wait()
	defer cancel()
	// subscriptions are asynchronous: publish until the first arrives
	waitFor(t, "subscribed", 5*time.Second, func() bool {
		buses[0].KeyChanged("warmup")
		return caches[1].has("warmup") && caches[2].has("warmup")
	})
	start := time.Now()
	buses[0].KeyChanged("key_1")
	waitFor(t, "replica 1 told", time.Second, func() bool { return caches[1].has("key_1") })
	waitFor(t, "replica 2 told", time.Second, func() bool { return caches[2].has("key_1") })
	t.Logf("a change reached both other replicas in %v", time.Since(start))
}

func TestLostSubscriptionDropsCacheAndShortensIt(t *testing.T) {
	srv := redistest.Start(t)
	opts, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	c := &cache{}
	var mu sync.Mutex
	var events []bool
	b := redisnotify.New(rdb, c, redisnotify.Options{Timeout: 200 * time.Millisecond, ShortTTL: 500 * time.Millisecond,
		OnLost: func(l bool) { mu.Lock(); events = append(events, l); mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond)
	srv.Stop()
	waitFor(t, "lost", 5*time.Second, func() bool { all, short := c.state(); return all >= 1 && short == 500*time.Millisecond })
	if !b.Lost() {
		t.Fatal("Lost() = false while Redis is down")
	}
	srv.Restart()
	waitFor(t, "back", 10*time.Second, func() bool { all, short := c.state(); return all >= 2 && short == 0 })
	if b.Lost() {
		t.Fatal("Lost() = true after Redis came back")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || !events[0] || events[1] {
		t.Fatalf("OnLost calls %v, want [true false]", events)
	}
}
