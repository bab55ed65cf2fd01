package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Tests of the operator CLI itself (issue 12): flags anywhere, help, which
// database a command used, and names in usage summaries. Each runs run()
// in-process with stdout and stderr captured apart.

// cliResult is one in-process run of the CLI.
type cliResult struct {
	stdout, stderr string
	err            error
}

func runCLI(getenv func(string) string, args ...string) cliResult {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, getenv, func() time.Time { return clockStart }, &out, &errOut)
	return cliResult{out.String(), errOut.String(), err}
}

// mustCLI runs args and fails the test unless it succeeds.
func mustCLI(t *testing.T, getenv func(string) string, args ...string) cliResult {
	t.Helper()
	r := runCLI(getenv, args...)
	if r.err != nil {
		t.Fatalf("tollgate %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// newDBWithKey makes a database with one key named name and returns its
// path and the key's id.
func newDBWithKey(t *testing.T, name string) (db, id string) {
	t.Helper()
	db = filepath.Join(t.TempDir(), "t.db")
	r := mustCLI(t, env(), "keys", "create", "--db", db, "--name", name, "--json")
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.ID == "" {
		t.Fatalf("keys create --json printed %q (%v)", r.stdout, err)
	}
	return db, created.ID
}

// README's own lines: flags after the key id.
func TestKeysFlagsAfterID(t *testing.T) {
	db, id := newDBWithKey(t, "svc")

	r := mustCLI(t, env(), "keys", "rotate", id, "--grace", "1h", "--json", "--db", db)
	var rotated struct{ ID, Key string }
	if err := json.Unmarshal([]byte(r.stdout), &rotated); err != nil || rotated.ID != id || rotated.Key == "" {
		t.Fatalf("keys rotate ID --grace 1h --json printed %q (%v)", r.stdout, err)
	}
	if want := clockStart.Add(time.Hour); !strings.Contains(mustCLI(t, env(), "keys", "rotate", id, "--db", db, "--grace=1h").stdout, want.Format(time.RFC3339)) {
		t.Errorf("keys rotate ID --grace=1h did not take the grace period")
	}

	r = mustCLI(t, env(), "keys", "show", id, "--db", db, "--json")
	var shown struct{ ID, Name string }
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown.ID != id || shown.Name != "svc" {
		t.Fatalf("keys show ID --db DB --json printed %q (%v)", r.stdout, err)
	}
	// Flags on both sides of the id.
	mustCLI(t, env(), "keys", "show", "--db", db, id, "--json")

	r = mustCLI(t, env(), "keys", "revoke", id, "--json", "--db", db)
	var revoked struct {
		RevokedAt time.Time `json:"revoked_at"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &revoked); err != nil || revoked.RevokedAt.IsZero() {
		t.Fatalf("keys revoke ID --json printed %q (%v)", r.stdout, err)
	}

	// Every other subcommand takes its flags anywhere too.
	mustCLI(t, env(), "keys", "create", "--db", db, "--json", "--name", "late")
	mustCLI(t, env(), "keys", "list", "--json", "--db", db)
	mustCLI(t, env(), "usage", "summary", "--by", "model", "--db", db)
	mustCLI(t, env(), "usage", "export", "--db", db, "--format", "csv")
}

func TestFlagParsingEdges(t *testing.T) {
	db, id := newDBWithKey(t, "svc")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		// "--" ends the flags: what follows is an id, even if it looks like a flag.
		{"after --", []string{"keys", "show", "--db", db, "--", "--json"}, 1, `no key with id "--json"`},
		{"two ids", []string{"keys", "show", id, id + "x", "--db", db}, 2, `unexpected argument "` + id + `x"`},
		{"stray after flags", []string{"keys", "list", "--db", db, "extra"}, 2, `unexpected argument "extra"`},
		{"stray after --", []string{"keys", "list", "--db", db, "--", "--json"}, 2, `unexpected argument "--json"`},
		{"no id", []string{"keys", "revoke", "--db", db, "--json"}, 2, "a key id is required"},
		{"unknown flag after id", []string{"keys", "show", id, "--nope"}, 2, "flag provided but not defined: -nope"},
		{"serve stray", []string{"serve", "--addr", "127.0.0.1:0", "extra"}, 2, `unexpected argument "extra"`},
		{"usage stray", []string{"usage", "summary", "--db", db, "extra"}, 2, `unexpected argument "extra"`},
		{"flag before subcommand", []string{"keys", "--json", "list"}, 2, "comes before flags such as --json"},
		{"unknown subcommand", []string{"usage", "frob"}, 2, `unknown subcommand "frob" (want export or summary)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(env(), tc.args...)
			if r.err == nil {
				t.Fatalf("tollgate %s succeeded:\n%s", strings.Join(tc.args, " "), r.stdout)
			}
			if got := exitCode(r.err); got != tc.code {
				t.Errorf("exit code %d, want %d (err %v)", got, tc.code, r.err)
			}
			if !strings.Contains(r.err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", r.err, tc.want)
			}
		})
	}
	// A flag's value that is "--" is a value, not the end of the flags.
	r := mustCLI(t, env(), "keys", "create", "--db", db, "--name", "--", "--json")
	if !json.Valid([]byte(r.stdout)) || !strings.Contains(r.stdout, `"name": "--"`) {
		t.Fatalf("keys create --name -- --json printed %q", r.stdout)
	}
}

// -h and --help, anywhere, print the command's usage on stdout and succeed.
func TestHelpAnywhere(t *testing.T) {
	db, id := newDBWithKey(t, "svc")
	cases := []struct {
		args []string
		want []string // in the help text
	}{
		{[]string{"serve", "--help"}, []string{"usage: tollgate serve", "TOLLGATE_ADDR", "TOLLGATE_DB", "TOLLGATE_MODELS", "TOLLGATE_LOG_LEVEL",
			"TOLLGATE_METRICS_ADDR", "TOLLGATE_TRUSTED_PROXIES", "TOLLGATE_TLS_CERT", "TOLLGATE_TLS_KEY", "OLLAMA_HOST"}},
		{[]string{"serve", "--addr", ":0", "-h"}, []string{"usage: tollgate serve"}},
		{[]string{"check-config", "-h"}, []string{"usage: tollgate check-config", "TOLLGATE_MODELS", "OLLAMA_HOST"}},
		{[]string{"keys", "-h"}, []string{"usage: tollgate keys", "create", "list", "show", "revoke", "rotate", "TOLLGATE_DB"}},
		{[]string{"keys", "--help"}, []string{"usage: tollgate keys"}},
		{[]string{"keys", "help"}, []string{"usage: tollgate keys"}},
		{[]string{"usage", "-h"}, []string{"usage: tollgate usage", "export", "summary", "TOLLGATE_DB"}},
		{[]string{"usage", "--help"}, []string{"usage: tollgate usage"}},
		{[]string{"keys", "create", "-h"}, []string{"usage: tollgate keys create", "-name", "-scopes", "TOLLGATE_DB", "TOLLGATE_MODELS"}},
		{[]string{"keys", "create", "--db", db, "--name", "x", "--help"}, []string{"usage: tollgate keys create"}},
		{[]string{"keys", "list", "--json", "-h"}, []string{"usage: tollgate keys list", "TOLLGATE_DB"}},
		{[]string{"keys", "show", id, "-h"}, []string{"usage: tollgate keys show ID"}},
		{[]string{"keys", "revoke", "-h"}, []string{"usage: tollgate keys revoke ID"}},
		{[]string{"keys", "rotate", id, "--grace", "1h", "--help"}, []string{"usage: tollgate keys rotate ID", "-grace"}},
		{[]string{"usage", "summary", "-h"}, []string{"usage: tollgate usage summary", "-by", "TOLLGATE_DB"}},
		{[]string{"usage", "export", "--format", "csv", "-h"}, []string{"usage: tollgate usage export", "-format", "TOLLGATE_DB"}},
		{[]string{"help"}, []string{"usage: tollgate <command>"}},
		{[]string{"--help"}, []string{"usage: tollgate <command>"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(env(), tc.args...)
			if code := exitCode(r.err); code != 0 {
				t.Fatalf("exit code %d (err %v), want 0\nstderr:\n%s", code, r.err, r.stderr)
			}
			var stderr bytes.Buffer
			if code := report(r.err, &stderr); code != 0 || stderr.Len() > 0 {
				t.Errorf("main would exit %d and print %q, want 0 and nothing", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("help on stdout does not mention %q:\n%s", w, r.stdout)
				}
			}
			if r.stderr != "" {
				t.Errorf("help wrote to stderr:\n%s", r.stderr)
			}
		})
	}
	// Help never acts: no key was created by `keys create ... --help`.
	r := mustCLI(t, env(), "keys", "list", "--db", db, "--json")
	if strings.Count(r.stdout, `"id"`) != 1 {
		t.Fatalf("keys list after help:\n%s", r.stdout)
	}
	// Nor does it create a database.
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	runCLI(env(), "keys", "create", "--db", fresh, "--name", "x", "-h")
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keys create -h left %s behind (%v)", fresh, err)
	}
}

// Every flag whose default comes from an environment variable names that
// variable in its help line.
func TestHelpNamesEachFlagsEnvironmentVariable(t *testing.T) {
	// Every variable reads as "ENV=<name>", so a flag's default shows where it came from.
	fromEnv := func(name string) string { return "ENV=" + name }
	entry := regexp.MustCompile(`(?m)^  -(\S+).*\n((?:    .*\n?)+)`)
	for _, args := range [][]string{
		{"serve", "-h"}, {"check-config", "-h"}, {"keys", "create", "-h"}, {"keys", "list", "-h"},
		{"keys", "show", "-h"}, {"keys", "revoke", "-h"}, {"keys", "rotate", "-h"},
		{"usage", "export", "-h"}, {"usage", "summary", "-h"},
	} {
		r := runCLI(fromEnv, args...)
		if exitCode(r.err) != 0 {
			t.Fatalf("tollgate %s: %v", strings.Join(args, " "), r.err)
		}
		entries := entry.FindAllStringSubmatch(r.stdout, -1)
		if len(entries) == 0 {
			t.Fatalf("tollgate %s printed no flags:\n%s", strings.Join(args, " "), r.stdout)
		}
		for _, e := range entries {
			m := regexp.MustCompile(`\(default "ENV=(\w+)"\)`).FindStringSubmatch(e[2])
			if m == nil {
				continue
			}
			help := e[2][:strings.Index(e[2], "(default")]
			if !strings.Contains(help, "env "+m[1]) {
				t.Errorf("tollgate %s: flag -%s comes from %s but its help does not say so: %q", strings.Join(args, " "), e[1], m[1], strings.TrimSpace(help))
			}
		}
	}
}
