// Package redisnotify carries key changes between replicas over a Redis
// pub/sub channel: a replica that revokes, rotates or updates a key
// publishes its id, and every replica drops that key from its verification
// cache at once. While the subscription is lost a replica cannot know what
// it missed, so it drops its whole cache and trusts it for a shorter time
// until the subscription is back.
package redisnotify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/auth"
)

// Defaults for Options.
const (
	DefaultChannel  = "tollgate:keys"
	DefaultShortTTL = time.Second
	DefaultTimeout  = 2 * time.Second
)

// Options configure a Bus.
type Options struct {
	Channel string // "" = DefaultChannel
	// ShortTTL is the cache lifetime while the subscription is lost
	// (0 = DefaultShortTTL).
	ShortTTL time.Duration
	// Timeout bounds a publish, and is how long the subscription may be
	// silent before it is pinged (0 = DefaultTimeout).
	Timeout time.Duration
	// OnLost, if set, is told true when the subscription is lost and
	// false when it is back.
	OnLost func(bool)
	Logger *slog.Logger // nil: discard
}

// Bus publishes key changes and applies other replicas' changes to a
// cache. It is safe for concurrent use.
type Bus struct {
	rdb      redis.UniversalClient
	cache    auth.CacheControl // nil: publish only (the CLI)
	channel  string
	shortTTL time.Duration
	timeout  time.Duration
	onLost   func(bool)
	log      *slog.Logger
	lost     atomic.Bool
}

// New returns a Bus on rdb that applies changes to cache (nil: it only
// publishes).
func New(rdb redis.UniversalClient, cache auth.CacheControl, opts Options) *Bus {
	b := &Bus{rdb: rdb, cache: cache, channel: opts.Channel, shortTTL: opts.ShortTTL, timeout: opts.Timeout,
		onLost: opts.OnLost, log: opts.Logger}
	if b.channel == "" {
		b.channel = DefaultChannel
	}
	if b.shortTTL <= 0 {
		b.shortTTL = DefaultShortTTL
	}
	if b.timeout <= 0 {
		b.timeout = DefaultTimeout
	}
	if b.onLost == nil {
		b.onLost = func(bool) {}
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return b
}

// KeyChanged publishes keyID's change; it makes Bus an auth.ChangeNotifier.
// A failed publish is logged: other replicas then see the change within
// their cache lifetime.
func (b *Bus) KeyChanged(keyID string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	if err := b.rdb.Publish(ctx, b.channel, keyID).Err(); err != nil {
		b.log.Warn("could not tell other replicas about a key change; they see it when their cache expires",
			"key_id", keyID, "error", err.Error())
	}
}

// Lost reports whether the subscription is down.
func (b *Bus) Lost() bool { return b.lost.Load() }

// Run listens for changes until ctx ends, reconnecting by itself when the
// subscription is lost.
func (b *Bus) Run(ctx context.Context) error {
	ps := b.rdb.Subscribe(ctx, b.channel)
	defer ps.Close()
	for {
		msg, err := ps.ReceiveTimeout(ctx, b.timeout)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Silence: make sure the connection is alive.
				pctx, cancel := context.WithTimeout(ctx, b.timeout)
				err = ps.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			b.setLost(true, err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: changes made while we were away are unknown.
			b.setLost(false, nil)
		case *redis.Message:
			if b.cache != nil {
				b.cache.Invalidate(m.Payload)
			}
		}
	}
}

func (b *Bus) setLost(lost bool, err error) {
	if b.lost.Swap(lost) == lost {
		return
	}
	if b.cache != nil {
		b.cache.InvalidateAll()
		if lost {
			b.cache.ShortenCache(b.shortTTL)
		} else {
			b.cache.ShortenCache(0)
		}
	}
	if lost {
		b.log.Error("lost the Redis subscription for key changes; verifying keys with a short cache until it is back",
			"cache_ttl", b.shortTTL.String(), "error", err.Error())
	} else {
		b.log.Info("subscribed to key changes in Redis")
	}
	b.onLost(lost)
}
