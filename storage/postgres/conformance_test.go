package postgres_test

import (
	"context"
	"testing"

	"tollgate/storage"
	"tollgate/storage/postgres"
	"tollgate/storage/postgres/pgtest"
	"tollgate/storage/storetest"
)

// The PostgreSQL store passes the conformance suite every store passes,
// each test on a database of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		db, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
