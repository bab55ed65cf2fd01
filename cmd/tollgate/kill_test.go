package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// Durability of usage records against the real binary: SIGKILL under load
// loses no delivered response's record; SIGTERM drains in-flight requests.

var (
	// stateDir is XDG_STATE_HOME for every server and CLI run of the
	// tests (env, startBinaryOn): the usage journals of PostgreSQL servers
	// go there, not into the source tree.
	stateDir  string
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// TestMain removes the binary built by tollgateBinary.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stateDir = dir
	code := m.Run()
	os.RemoveAll(stateDir)
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// tollgateBinary builds cmd/tollgate once per test binary and returns its path.
func tollgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "tollgate-bin-"); buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "tollgate"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "tollgate")
}

// proc is `tollgate serve` running as a child process.
type proc struct {
	cmd    *exec.Cmd
	url    string
	db     string
	out    *syncBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, set before exited closes
}

// startBinary runs the built binary's serve on a fresh database in front of
// fake, with nothing from the test's environment (OLLAMA_HOST included).
func startBinary(t *testing.T, fake *ollamatest.Server) *proc {
	t.Helper()
	return startBinaryOn(t, fake, filepath.Join(t.TempDir(), "t.db"))
}

// startBinaryOn is startBinary on the database file db (which may hold an
// earlier process's state), with extra serve flags.
func startBinaryOn(t *testing.T, fake *ollamatest.Server, db string, args ...string) *proc {
	t.Helper()
	return startBinaryEnv(t, fake, db, nil, args...)
}

// startBinaryEnv is startBinaryOn with extra environment variables
// ("NAME=value").
func startBinaryEnv(t *testing.T, fake *ollamatest.Server, db string, extraEnv []string, args ...string) *proc {
	t.Helper()
	p := &proc{db: db, out: &syncBuffer{}, exited: make(chan struct{})}
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	p.cmd = exec.Command(tollgateBinary(t), append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db, "--models", cat}, args...)...)
	p.cmd.Env = append([]string{"XDG_STATE_HOME=" + stateDir}, extraEnv...) // where a PostgreSQL server's usage journal goes
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill() // fails harmlessly once it has exited
		<-p.exited
	})
	eventually(t, 10*time.Second, "tollgate listening", func() bool {
		var ok bool
		p.url, ok = listeningURL(p.out.String())
		return ok
	})
	return p
}

// wait returns the process's exit error, failing after within.
func (p *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(within):
		t.Fatalf("tollgate did not exit within %s:\n%s", within, p.out.String())
		return nil
	}
}

// generateID posts a non-streaming /generate and returns the id of a 200
// answer received in full.
func generateID(ctx context.Context, hc *http.Client, url, key string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/generate", strings.NewReader(`{"prompt":"hi"}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("X-API-Key", key)
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var out struct{ ID, Text string }
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 || out.ID == "" || out.Text == "" {
		return "", fmt.Errorf("generate = %d %s (%v)", resp.StatusCode, body, err)
	}
	return out.ID, nil
}

func TestSIGKILLUnderLoadLosesNoDeliveredRecord(t *testing.T) {
	fake := newFake(t, ollamatest.WithoutRecording())
	p := startBinary(t, fake)
	keyID, key := createKeyWithID(t, p.db, "--name", "load")
	hc := clientFrom(t, "127.0.0.1", 32)

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var (
		mu       sync.Mutex
		received []string
		failures []string
		wg       sync.WaitGroup
		killed   atomic.Bool
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(received) }
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				id, err := generateID(ctx, hc, p.url, key)
				mu.Lock()
				if err == nil {
					received = append(received, id)
				} else if !killed.Load() {
					failures = append(failures, err.Error())
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	eventually(t, 20*time.Second, "a second of load", func() bool { return count() >= 200 && time.Since(start) >= time.Second })
	before := count()
	killed.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := p.wait(t, 10*time.Second)
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("tollgate exited with %v, not by SIGKILL", err)
	}
	stopLoad()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed before the kill, e.g. %s", len(failures), failures[0])
	}

	rows := exportUsage(t, p.db) // reopens the database, recovering its WAL
	missing := 0
	for _, id := range received {
		if r, ok := rows[id]; !ok || r.Status != 200 || r.KeyID != keyID {
			missing++
			if missing <= 5 {
				t.Errorf("delivered response %s has record %+v (found %v)", id, r, ok)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d delivered responses have no record", missing, len(received))
	}
	t.Logf("%d responses delivered (%d when the kill was sent), %d records", len(received), before, len(rows))
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	hold := make(chan struct{})
	fake := newFake(t, ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	// All 8 run at Ollama at once (a backend runs 4 by default).
	p := startBinaryOn(t, fake, filepath.Join(t.TempDir(), "t.db"), "--max-inflight", "8")
	keyID, key := createKeyWithID(t, p.db, "--name", "draining")

	const n = 8
	type result struct {
		id  string
		err error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			if i%2 == 0 {
				id, err := generateID(context.Background(), http.DefaultClient, p.url, key)
				results <- result{id, err}
				return
			}
			pieces, done, err := postStream(context.Background(), p.url, key, `{"prompt":"hi","stream":true}`)
			if err == nil && (len(pieces) == 0 || done.Usage.CompletionTokens != int64(len(pieces))) {
				err = fmt.Errorf("stream: pieces %q, end %+v", pieces, done)
			}
			results <- result{done.ID, err}
		}()
	}
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fake.Wait(wctx, func(s ollamatest.Stats) bool { return s.InFlight == n }); err != nil {
		t.Fatalf("%d requests in flight at Ollama, want %d", fake.Stats().InFlight, n)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(p.url, "http://")
	eventually(t, 5*time.Second, "listener closed after SIGTERM", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case <-p.exited:
		t.Fatalf("tollgate exited (%v) with %d requests in flight:\n%s", p.err, n, p.out.String())
	default:
	}
	close(hold)

	var ids []string
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("in-flight request: %v", r.err)
		}
		ids = append(ids, r.id)
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("tollgate exited with %v after SIGTERM, want 0:\n%s", err, p.out.String())
	}
	if !strings.Contains(p.out.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log:\n%s", p.out.String())
	}
	rows := exportUsage(t, p.db)
	for _, id := range ids {
		if r, ok := rows[id]; !ok || r.Status != 200 || r.KeyID != keyID {
			t.Errorf("drained request %s has record %+v (found %v)", id, r, ok)
		}
	}
	if len(rows) != n {
		t.Errorf("%d records for %d requests", len(rows), n)
	}
}
