package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"tollgate/auth"
)

// KeyFeed is an auth.KeyChangeFeed over PostgreSQL LISTEN/NOTIFY: every
// change to a key announces itself on KeyChannel in its own transaction
// (see changeKey), whichever replica or CLI made it, and each replica's
// KeyFeed hands the key id to its verifier at commit. It holds one
// connection of its own, outside the pool.
type KeyFeed struct {
	cfg      *pgx.ConnConfig
	addr     string
	retry    time.Duration
	idle     time.Duration
	onChange func(up bool, err error)
}

// Defaults for KeyFeedOptions.
const (
	DefaultFeedRetry = time.Second
	DefaultFeedIdle  = 5 * time.Second
)

// KeyFeedOptions configure a KeyFeed. The zero value gives the defaults.
type KeyFeedOptions struct {
	// Retry is the wait between attempts to reconnect. 0: DefaultFeedRetry.
	Retry time.Duration
	// Idle is how long the feed waits for a notification before checking
	// that its connection is alive (a ping), so a silently dropped
	// connection is noticed. 0: DefaultFeedIdle.
	Idle time.Duration
	// OnChange, if set, is told when the feed starts listening (up true)
	// and when it loses its connection or fails to connect (up false, with
	// the reason; its message names the server, never the password).
	OnChange func(up bool, err error)
}

var _ auth.KeyChangeFeed = (*KeyFeed)(nil)

// KeyFeed returns a feed of key changes from db's server.
func (db *DB) KeyFeed(opts KeyFeedOptions) *KeyFeed {
	f := &KeyFeed{cfg: db.pool.Config().ConnConfig.Copy(), addr: db.addr, retry: opts.Retry, idle: opts.Idle, onChange: opts.OnChange}
	if f.retry <= 0 {
		f.retry = DefaultFeedRetry
	}
	if f.idle <= 0 {
		f.idle = DefaultFeedIdle
	}
	return f
}

// Run listens on KeyChannel until ctx ends, reconnecting after a lost
// connection. It tells sink FeedDown at the start and whenever the
// connection is lost (changes may be missed until it listens again), FeedUp
// once LISTEN is in place, and Invalidate for each key changed. It returns
// nil when ctx ends.
func (f *KeyFeed) Run(ctx context.Context, sink auth.KeyChangeSink) error {
	sink.FeedDown()
	for {
		err := f.listen(ctx, sink)
		if ctx.Err() != nil {
			return nil
		}
		sink.FeedDown()
		if f.onChange != nil {
			f.onChange(false, &wrapErr{addr: f.addr, err: err})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.retry):
		}
	}
}

// listen holds one connection: LISTEN, then notifications until an error.
func (f *KeyFeed) listen(ctx context.Context, sink auth.KeyChangeSink) error {
	conn, err := pgx.ConnectConfig(ctx, f.cfg.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{KeyChannel}.Sanitize()); err != nil {
		return err
	}
	sink.FeedUp()
	if f.onChange != nil {
		f.onChange(true, nil)
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, f.idle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			sink.Invalidate(n.Payload)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded) || conn.IsClosed():
			return err
		}
		// Quiet for idle: make sure the connection is still there.
		pctx, cancel := context.WithTimeout(ctx, f.idle)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
	}
}

// wrapErr names the server in a lost feed's error.
type wrapErr struct {
	addr string
	err  error
}

func (e *wrapErr) Error() string {
	msg := "connection closed"
	if e.err != nil {
		msg = e.err.Error()
	}
	return "PostgreSQL at " + e.addr + ": not listening for key changes: " + msg
}

func (e *wrapErr) Unwrap() error { return e.err }
