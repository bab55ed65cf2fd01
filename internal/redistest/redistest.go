// Package redistest gives tests a real Redis: the shared one named by
// TOLLGATE_TEST_REDIS_URL (scripts/test-services.sh starts it), or a
// private redis-server a test starts and stops itself. Without Redis a test
// skips, loudly, unless TOLLGATE_REQUIRE_SERVICES=1 makes it fail.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// unavailable skips t, or fails it when services are required.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("TOLLGATE_REQUIRE_SERVICES") == "1" {
		t.Fatalf("TOLLGATE_REQUIRE_SERVICES=1 but %s", why)
	}
	t.Skipf("SKIPPED, NO REDIS: %s (run scripts/test-services.sh, or set TOLLGATE_TEST_REDIS_URL)", why)
}

// URL returns the shared test Redis's URL.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if u == "" {
		unavailable(t, "TOLLGATE_TEST_REDIS_URL is not set")
	}
	return u
}

// Client returns a client of the shared test Redis and a key prefix no
// other test uses, so tests can share one Redis.
func Client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opts, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatalf("TOLLGATE_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		unavailable(t, "the Redis at TOLLGATE_TEST_REDIS_URL does not answer: "+err.Error())
	}
	return c, Prefix()
}

// Prefix returns a fresh key prefix.
func Prefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test:" + hex.EncodeToString(b[:]) + ":"
}

// Server is a private redis-server on a loopback port.
type Server struct {
	Addr string
	dir  string
	t    testing.TB
}

// Start starts a private redis-server (without persistence) in a
// temporary folder; it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(t, "redis-server is not installed (apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	s := &Server{Addr: addr, dir: t.TempDir(), t: t}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Restart starts the server again on the same port (empty: nothing is saved).
func (s *Server) Restart() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	out, err := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--daemonize", "yes", "--dir", s.dir, "--pidfile", filepath.Join(s.dir, "redis.pid")).CombinedOutput()
	if err != nil {
		s.t.Fatalf("redis-server: %v: %s", err, out)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s did not answer within 10 s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server (it can be started again with Restart).
func (s *Server) Stop() {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	_ = c.ShutdownNoSave(context.Background()).Err()
	pidFile := filepath.Join(s.dir, "redis.pid")
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(pidFile); err != nil {
			return
		}
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(string(trim(b)))
		if pid > 0 && !alive(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "redistest: redis-server on", s.Addr, "did not stop")
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(syscallZero) == nil
}
