package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/inference/ollamatest"
	"tollgate/storage/sqlite"
)

// TestManyKeysRSS measures the memory of a tollgate process with 100k keys
// in its database and 10k of them in use at once: each of 10k distinct keys
// (each with a rate limit, so each gets its own limiter) sends one
// /generate through the real binary to a fake Ollama, within the key cache's
// lifetime, so 10k verified keys are cached and 10k limiters are held when
// RSS is read. It fails if peak RSS reaches 100 MB (issue 7's target).
//
// It takes about a minute, so it runs only with TOLLGATE_BENCH=1:
//
//	TOLLGATE_BENCH=1 go test -run ManyKeys -v ./bench/
//
// TOLLGATE_BENCH_KEYS and TOLLGATE_BENCH_ACTIVE change the counts.
func TestManyKeysRSS(t *testing.T) {
	if os.Getenv("TOLLGATE_BENCH") != "1" {
		t.Skip("set TOLLGATE_BENCH=1 to run (about a minute)")
	}
	total, active := envInt(t, "TOLLGATE_BENCH_KEYS", 100_000), envInt(t, "TOLLGATE_BENCH_ACTIVE", 10_000)
	if active > total {
		t.Fatalf("%d active keys out of %d", active, total)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	bin := filepath.Join(dir, "tollgate")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "tollgate/cmd/tollgate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The keys, through auth.Keys (validation, hashing, audit rows) on
	// storage, as the CLI and admin API create them.
	dbPath := filepath.Join(dir, "tollgate.db")
	db, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeys(db, nil, nil)
	secrets := make([]string, 0, active)
	start := time.Now()
	for i := range total {
		spec := auth.Spec{Name: fmt.Sprintf("customer-%06d", i), Scopes: []auth.Scope{auth.ScopeGenerate},
			Limits: auth.Limits{RequestsPerSecond: 5, Burst: 10, TokensPerMinute: 100_000, MaxConcurrent: 4}}
		_, secret, err := keys.Create(ctx, auth.ActorCLI, spec)
		if err != nil {
			t.Fatal(err)
		}
		if i%(total/active) == 0 && len(secrets) < active {
			secrets = append(secrets, secret)
		}
	}
	db.Close()
	t.Logf("created %d keys in %v", total, time.Since(start).Round(time.Millisecond))

	fake := ollamatest.NewServer(ollamatest.WithoutRecording())
	defer fake.Close()
	models := filepath.Join(dir, "models.yaml")
	catalog := fmt.Sprintf("backends:\n  - url: %s\nmodels:\n  chat:\n    ollama: llama3.2:3b\n    endpoints: [generate]\n", fake.URL)
	if err := os.WriteFile(models, []byte(catalog), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "tollgate.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, bin, "serve", "--addr", "127.0.0.1:0", "--db", dbPath, "--models", models)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	base := "http://" + listenAddr(t, logPath)
	pid := cmd.Process.Pid
	idle := procStatus(t, pid)
	t.Logf("idle, %d keys stored: VmRSS %.1f MiB", total, mib(idle["VmRSS"]))

	// Each active key sends one request, from 32 connections at once.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	var (
		next, failed atomic.Int64
		wg           sync.WaitGroup
	)
	body := []byte(`{"model":"chat","prompt":"Say hi in five words"}`)
	start = time.Now()
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(secrets)) {
					return
				}
				if err := generate(ctx, client, base, secrets[i], body); err != nil {
					if failed.Add(1) <= 3 {
						t.Errorf("key %d: %v", i, err)
					}
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed", n, len(secrets))
	}
	used := procStatus(t, pid)
	m := metrics(t, client, base)
	t.Logf("after %d distinct keys sent one request each (%v, within the 10 s key cache): VmRSS %.1f MiB, VmHWM %.1f MiB; Go heap in use %.1f MiB, %v goroutines",
		len(secrets), took.Round(time.Millisecond), mib(used["VmRSS"]), mib(used["VmHWM"]),
		m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_goroutines"])
	fmt.Printf("manykeys: keys=%d active=%d idle_rss_mib=%.1f rss_mib=%.1f hwm_mib=%.1f heap_inuse_mib=%.1f\n",
		total, len(secrets), mib(idle["VmRSS"]), mib(used["VmRSS"]), mib(used["VmHWM"]), m["go_memstats_heap_inuse_bytes"]/(1<<20))
	if hwm := mib(used["VmHWM"]); hwm*(1<<20) >= 100e6 {
		t.Errorf("peak RSS %.1f MiB: over the 100 MB target", hwm)
	}
}

func generate(ctx context.Context, client *http.Client, base, key string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/generate", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Text string `json:"text"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Text == "" {
		return fmt.Errorf("status %d, text %q, %v", resp.StatusCode, out.Text, err)
	}
	return nil
}

// listenAddr waits for the server's "tollgate listening" log line.
func listenAddr(t *testing.T, logPath string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(logPath)
		for line := range strings.SplitSeq(string(data), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "tollgate listening" {
				return rec.Addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	data, _ := os.ReadFile(logPath)
	t.Fatalf("tollgate did not start:\n%s", data)
	return ""
}

// procStatus returns the kB fields of /proc/pid/status (VmRSS, VmHWM, ...).
func procStatus(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if f := strings.Fields(rest); ok && len(f) == 2 && f[1] == "kB" {
			v, _ := strconv.ParseFloat(f[0], 64)
			out[name] = v * 1024
		}
	}
	return out
}

// metrics scrapes the untyped values of /metrics.
func metrics(t *testing.T, client *http.Client, base string) map[string]float64 {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	return out
}

func mib(b float64) float64 { return b / (1 << 20) }

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}
