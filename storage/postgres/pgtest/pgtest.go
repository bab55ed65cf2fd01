// Package pgtest gives tests a fresh PostgreSQL database on the test server
// that scripts/test-services.sh starts (TOLLGATE_TEST_POSTGRES_URL).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ServerURL returns the test server's URL. Without one the test is skipped,
// loudly, or fails when TOLLGATE_REQUIRE_SERVICES=1 (scripts/test.sh sets it).
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if u == "" {
		msg := "SKIPPED: no test PostgreSQL (TOLLGATE_TEST_POSTGRES_URL is unset); run scripts/test-services.sh start and eval \"$(scripts/test-services.sh env)\", or use scripts/test.sh"
		if os.Getenv("TOLLGATE_REQUIRE_SERVICES") == "1" {
			t.Fatal("TOLLGATE_REQUIRE_SERVICES=1 but " + msg)
		}
		t.Skip(msg)
	}
	return u
}

// NewDatabase creates an empty database on the test server and returns its
// URL; the database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		if os.Getenv("TOLLGATE_REQUIRE_SERVICES") == "1" {
			t.Fatalf("test PostgreSQL at TOLLGATE_TEST_POSTGRES_URL does not answer: %v", err)
		}
		t.Skipf("SKIPPED: test PostgreSQL at TOLLGATE_TEST_POSTGRES_URL does not answer: %v", err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "tg_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, server)
		if err != nil {
			return // the server is gone (a test stopped it): nothing to drop
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
