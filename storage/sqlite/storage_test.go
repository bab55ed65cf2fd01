package sqlite_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tollgate/storage/sqlite"
)

// openTest opens a fresh database file in a temporary directory.
func openTest(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenMigratesAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	ctx := context.Background()
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = sqlite.Open(ctx, path) // second open must not re-apply steps
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	if db.Path() != path {
		t.Fatalf("Path() = %q", db.Path())
	}
}

func TestOpenRejectsBadPath(t *testing.T) {
	for _, p := range []string{"", "x.db?mode=ro", filepath.Join(t.TempDir(), "missing-dir", "t.db")} {
		if _, err := sqlite.Open(context.Background(), p); err == nil {
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

func TestOpenExistingNeverCreates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "t.db")
	_, err := sqlite.OpenExisting(ctx, path)
	if !errors.Is(err, sqlite.ErrNoDatabase) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenExisting(missing) = %v; want ErrNoDatabase naming the path", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("OpenExisting(missing) left %d files behind (%s)", len(entries), entries[0].Name())
	}
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = sqlite.OpenExisting(ctx, path)
	if err != nil {
		t.Fatalf("OpenExisting(existing): %v", err)
	}
	defer db.Close()
	if _, err := db.ListKeys(ctx); err != nil {
		t.Fatalf("ListKeys on an OpenExisting database: %v", err)
	}
}
