package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Commands that read or change keys and usage never create a database: a
// missing file is an error that names it and says how to pick another.
func TestReadAndChangeCommandsNeedAnExistingDatabase(t *testing.T) {
	for _, args := range [][]string{
		{"keys", "list"}, {"keys", "show", "key_x"}, {"keys", "revoke", "key_x"}, {"keys", "rotate", "key_x"},
		{"usage", "export"}, {"usage", "summary"},
		{"accounts", "list"}, {"accounts", "show", "acct_x"}, {"accounts", "update", "acct_x", "--name", "x"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := t.TempDir()
			missing := filepath.Join(dir, "nope.db")
			check := func(r cliResult, path string) {
				t.Helper()
				if r.err == nil {
					t.Fatalf("succeeded on a missing database:\n%s", r.stdout)
				}
				if exitCode(r.err) != 1 {
					t.Errorf("exit code %d, want 1", exitCode(r.err))
				}
				for _, w := range []string{path, "does not exist", "--db", "TOLLGATE_DB"} {
					if !strings.Contains(r.err.Error(), w) {
						t.Errorf("error %q does not mention %q", r.err, w)
					}
				}
				if r.stdout != "" {
					t.Errorf("stdout: %q", r.stdout)
				}
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					t.Errorf("left %s behind", e.Name())
				}
			}
			check(runCLI(env(), append(args, "--db", missing)...), missing)
			check(runCLI(env("TOLLGATE_DB", missing), args...), missing)
			t.Chdir(dir) // the default, tollgate.db in the working directory
			check(runCLI(env(), args...), filepath.Join(dir, "tollgate.db"))
		})
	}
}

// Each command that uses a database names it on stderr, one line, and keeps
// stdout for its output; keys create says when it made a new file.
func TestCLINamesTheDatabaseOnStderr(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	abs := filepath.Join(dir, "tollgate.db")
	r := mustCLI(t, env(), "keys", "create", "--name", "first", "--json")
	if !json.Valid([]byte(r.stdout)) {
		t.Fatalf("stdout is not JSON: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, abs) || !strings.Contains(r.stderr, "new") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("keys create on a new file: stderr %q; want one line naming %s as new", r.stderr, abs)
	}
	r = mustCLI(t, env(), "keys", "create", "--name", "second", "--json")
	if !strings.Contains(r.stderr, abs) || strings.Contains(r.stderr, "new") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("keys create on an existing file: stderr %q; want one line naming %s", r.stderr, abs)
	}
	for _, args := range [][]string{{"keys", "list", "--json"}, {"usage", "summary"}, {"usage", "export"}} {
		r := mustCLI(t, env(), args...)
		if !strings.Contains(r.stderr, abs) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("tollgate %s: stderr %q; want one line naming %s", strings.Join(args, " "), r.stderr, abs)
		}
		if strings.Contains(r.stdout, abs) {
			t.Errorf("tollgate %s: the path is on stdout too: %q", strings.Join(args, " "), r.stdout)
		}
	}
}

// keys create makes the database file only for a key it stores: a mistake on
// the command line leaves nothing behind.
func TestKeysCreateMistakeLeavesNoFile(t *testing.T) {
	for _, args := range [][]string{
		{"keys", "create"}, // no --name
		{"keys", "create", "--name", "x", "--scopes", "fly"}, // unknown scope
		{"keys", "create", "--name", "x", "--expires", "soon"},
		{"keys", "create", "--name", "x", "--rate", "-1"},
	} {
		t.Run(strings.Join(args[2:], " "), func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			r := runCLI(env(), args...)
			if r.err == nil {
				t.Fatalf("succeeded:\n%s", r.stdout)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("%v left %s behind", r.err, entries[0].Name())
			}
		})
	}
}
