package postgres_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"tollgate"
	"tollgate/storage"
	"tollgate/storage/postgres"
	"tollgate/storage/postgres/pgtest"
)

// A server nobody listens on: the error names PostgreSQL and where it is,
// carries database_unavailable (503), and never the password.
func TestOpenUnreachableNamesTheServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = postgres.Open(context.Background(), "postgres://tollgate:hunter2secret@"+addr+"/tollgate?sslmode=disable")
	var u *storage.UnavailableError
	if !errors.As(err, &u) {
		t.Fatalf("Open = %v, want a *storage.UnavailableError", err)
	}
	if want := "PostgreSQL at " + addr + " is not reachable"; tollgate.ErrorMessage(err) != want {
		t.Fatalf("message = %q, want %q", tollgate.ErrorMessage(err), want)
	}
	if tollgate.ErrorCode(err) != tollgate.CodeDatabaseUnavailable || tollgate.CodeDatabaseUnavailable.Status() != 503 {
		t.Fatalf("code = %s", tollgate.ErrorCode(err))
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

func TestOpenRejectsABadURLWithoutEchoingIt(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://u:hunter2secret@host:notaport/db")
	if err == nil || strings.Contains(err.Error(), "hunter2secret") {
		t.Fatalf("Open(bad URL) = %v", err)
	}
}

// Replicas starting at once migrate the same database once.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := postgres.Open(context.Background(), url)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found (%v)", err)
	}
	var n int
	if err := db.Pool().QueryRow(context.Background(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(files) {
		t.Fatalf("schema_migrations has %d rows (%v), want one per migration, %d", n, err, len(files))
	}
}

// A wrong password is not "unreachable": the server answered, and the
// error says why it refused.
func TestOpenWrongDatabaseIsNotUnreachable(t *testing.T) {
	u := pgtest.ServerURL(t)
	bad := strings.Replace(u, "/postgres?", "/no_such_database_here?", 1)
	if bad == u {
		t.Skip("the test server's URL does not name the database postgres")
	}
	_, err := postgres.Open(context.Background(), bad)
	var un *storage.UnavailableError
	if err == nil || errors.As(err, &un) || !strings.Contains(err.Error(), "no_such_database_here") {
		t.Fatalf("Open(missing database) = %v, want the server's refusal, not unreachable", err)
	}
}
