package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// driverName is go-sqlite3 registered with a connect hook that turns off
// SQLite's automatic WAL checkpoint on every connection. Left on, the
// checkpoint (copying the WAL into the database file, with an fsync) runs
// inside whichever commit crosses 1,000 WAL pages, stalling that commit and
// every request waiting on it for milliseconds. The DB's own checkpointer
// runs it in the background instead.
const driverName = "sqlite3_tollgate"

var registerOnce sync.Once

func registerDriver() {
	registerOnce.Do(func() {
		sql.Register(driverName, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
			_, err := c.Exec("PRAGMA wal_autocheckpoint = 0", nil)
			return err
		}})
	})
}

// checkpointEvery is how often the background checkpointer runs. The WAL
// grows by what is committed in between (a few MB at most at thousands of
// records per second) and is reused from the start after each complete
// checkpoint.
const checkpointEvery = time.Second

// startCheckpoints runs a PASSIVE checkpoint every checkpointEvery until
// Close. PASSIVE never waits for readers or writers: commits go on while it
// copies, and what it could not copy is taken next time.
func (db *DB) startCheckpoints() {
	db.stopCkpt, db.ckptDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(db.ckptDone)
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		for {
			select {
			case <-db.stopCkpt:
				return
			case <-t.C:
				_ = db.Checkpoint(context.Background())
			}
		}
	}()
}

func (db *DB) stopCheckpoints() {
	if db.stopCkpt != nil {
		close(db.stopCkpt)
		<-db.ckptDone
		db.stopCkpt = nil
	}
}

// Checkpoint copies committed WAL content into the database file without
// blocking readers or writers (SQLite's PASSIVE mode). Open runs it every
// second; closing the database checkpoints everything.
func (db *DB) Checkpoint(ctx context.Context) error {
	_, err := db.sql.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	return err
}
