package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
	"tollgate/internal/realollama"
)

// env builds a getenv from pairs.
func env(kv ...string) func(string) string {
	m := map[string]string{"XDG_STATE_HOME": stateDir}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a `tollgate serve` started through run().
type running struct {
	url    string
	db     string
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startServe runs `tollgate serve` on a free port and waits until it listens.
func startServe(t *testing.T, getenv func(string) string, args ...string) *running {
	t.Helper()
	return startServeAt(t, time.Now, getenv, args...)
}

// startServeAt is startServe with the clock now (e.g. an authtest.Clock's Now).
func startServeAt(t *testing.T, now func() time.Time, getenv func(string) string, args ...string) *running {
	t.Helper()
	return startServeWith(t, now, filepath.Join(t.TempDir(), "t.db"), getenv, args...)
}

// startServeOn is startServe on the database file db (which may hold an
// earlier server's state).
func startServeOn(t *testing.T, db string, getenv func(string) string, args ...string) *running {
	t.Helper()
	return startServeWith(t, time.Now, db, getenv, args...)
}

func startServeWith(t *testing.T, now func() time.Time, db string, getenv func(string) string, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{db: db, out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--db", r.db}, args...)
	go func() { r.done <- run(ctx, args, getenv, now, r.out, r.out) }()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if url, ok := listeningURL(r.out.String()); ok {
			r.url = url
			return r
		}
		select {
		case err := <-r.done:
			t.Fatalf("serve exited early: %v\n%s", err, r.out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("serve did not start:\n%s", r.out.String())
	return nil
}

// listeningURL finds the scheme and address in serve's "tollgate listening" log line.
func listeningURL(log string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line struct{ Msg, Scheme, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "tollgate listening" {
			return line.Scheme + "://" + line.Addr, true
		}
	}
	return "", false
}

func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop within 10s of its context ending")
		return nil
	}
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tinyCatalog(url, model string) string {
	return fmt.Sprintf("backends:\n  - url: %s\nmodels:\n  tiny:\n    ollama: %s\n    endpoints: [generate, embed, predict]\n    options: {temperature: 0}\n", url, model)
}

func TestServeAnswersThroughRealOllama(t *testing.T) {
	url, model := realollama.Require(t)
	// The catalog points nowhere; OLLAMA_HOST must win.
	cat := writeFile(t, "models.yaml", tinyCatalog("http://127.0.0.1:1", model))
	r := startServe(t, env("TOLLGATE_MODELS", cat, "OLLAMA_HOST", url))

	key := createKey(t, r.db, "--name", "test")
	req, _ := http.NewRequest("POST", r.url+"/generate", strings.NewReader(`{"prompt":"hi"}`))
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"text":"WORKS"`) {
		t.Fatalf("POST /generate = %d %s", resp.StatusCode, body)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("serve returned %v after its context ended; want nil (clean shutdown)", err)
	}
	if !strings.Contains(r.out.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in log:\n%s", r.out.String())
	}
}

func TestServeRunsOnBuiltInCatalog(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	dir := t.TempDir()
	t.Chdir(dir) // no models.yaml here: the built-in one must be used
	r := startServe(t, env("OLLAMA_HOST", fake.URL))
	req, _ := http.NewRequest("GET", r.url+"/models", nil)
	req.Header.Set("Authorization", "Bearer "+createKey(t, r.db, "--name", "test"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"llama3.2"`) || !strings.Contains(string(body), `"nomic-embed-text"`) {
		t.Fatalf("GET /models on the built-in catalog = %s", body)
	}
	if !strings.Contains(r.out.String(), "built-in models.yaml") {
		t.Fatalf("log does not say the built-in catalog is used:\n%s", r.out.String())
	}
}

func TestRunErrors(t *testing.T) {
	broken := writeFile(t, "models.yaml", "backends:\n  - url: http://x:1\nmodels:\n  m:\n    ollama: m\n    endpoints: [chat]\n")
	cases := []struct {
		name   string
		args   []string
		getenv func(string) string
		code   int
		want   string
	}{
		{"no command", nil, env(), 2, "no command"},
		{"unknown command", []string{"frobnicate"}, env(), 2, `unknown command "frobnicate"`},
		{"bad flag", []string{"serve", "--nope"}, env(), 2, "flag provided but not defined"},
		{"stray argument", []string{"serve", "extra"}, env(), 2, `unexpected argument "extra"`},
		{"bad log level", []string{"serve", "--log-level", "loud"}, env(), 2, "--log-level"},
		{"broken catalog", []string{"serve", "--models", broken}, env(), 1, broken + ":6: models.m.endpoints[0]: unknown endpoint \"chat\""},
		{"missing explicit catalog", []string{"check-config"}, env("TOLLGATE_MODELS", "/nonexistent/models.yaml"), 1, "/nonexistent/models.yaml"},
		{"bad OLLAMA_HOST", []string{"check-config"}, env("OLLAMA_HOST", "ftp://x"), 1, "OLLAMA_HOST"},
		{"check-config unreachable", []string{"check-config", "--models", writeFile(t, "m.yaml", tinyCatalog(ollamatest.RefusedURL(t), "tiny"))}, env(), 1, "is not reachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tc.args, tc.getenv, time.Now, &out, &out)
			if err == nil {
				t.Fatalf("run(%q) succeeded; output:\n%s", tc.args, out.String())
			}
			if got := exitCode(err); got != tc.code {
				t.Errorf("exit code %d, want %d (err %v)", got, tc.code, err)
			}
			if !strings.Contains(err.Error()+out.String(), tc.want) {
				t.Errorf("error %q / output %q does not mention %q", err, out.String(), tc.want)
			}
		})
	}
}

func TestCheckConfigAndVersion(t *testing.T) {
	fake := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	defer fake.Close()
	var out bytes.Buffer
	cat := writeFile(t, "m.yaml", tinyCatalog(fake.URL, "tiny"))
	if err := run(context.Background(), []string{"check-config", "--models", cat}, env(), time.Now, &out, &out); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "1 models") || !strings.Contains(out.String(), fake.URL+": reachable") {
		t.Fatalf("check-config output:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"version"}, env(), time.Now, &out, &out); err != nil || !strings.HasPrefix(out.String(), "tollgate ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"serve", "-h"}, env(), time.Now, &out, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("serve -h returned %v", err)
	}
}

// createKey runs `tollgate keys create --json` on db and returns the secret.
func createKey(t *testing.T, db string, args ...string) string {
	t.Helper()
	_, secret := createKeyWithID(t, db, args...)
	return secret
}
