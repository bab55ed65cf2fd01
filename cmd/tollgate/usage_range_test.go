package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `tollgate usage` refuses dates the store cannot hold (usage times are Unix
// nanoseconds, years 1678-2262) instead of printing an empty report: the
// check is metering.ParseDate's, shared with the HTTP reports.
func TestUsageDatesOutOfRange(t *testing.T) {
	db := filepath.Join(t.TempDir(), "t.db")
	createKeyWithID(t, db, "--name", "dates") // the usage commands need an existing database
	for _, args := range [][]string{
		{"usage", "export", "--db", db, "--from", "2026-01-01", "--to", "2300-01-01"},
		{"usage", "export", "--db", db, "--from", "1969-12-31", "--format", "csv"},
		{"usage", "summary", "--db", db, "--from", "2026-01-01", "--to", "2300-01-01T00:00:00Z"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, env(), time.Now, &out, &out)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("%q: %v (exit %d), want a usage error (exit 2)\n%s", args, err, exitCode(err), out.String())
		} else if !strings.Contains(err.Error(), "1970") || !strings.Contains(err.Error(), "2200") {
			t.Errorf("%q: %v; want the message to give the range the store can hold", args, err)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"usage", "export", "--db", db, "--from", "1970-01-01", "--to", "2200-01-01"}, env(), time.Now, &out, &out); err != nil {
		t.Errorf("the edges: %v\n%s", err, out.String())
	}
}
