package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"tollgate/storage"
	"tollgate/storage/sqlite"
	"tollgate/storage/storetest"
)

// The SQLite store passes the conformance suite every store passes.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "tollgate.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
