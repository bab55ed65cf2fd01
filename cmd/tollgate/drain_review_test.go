package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// When the drain period runs out, serveHTTP must not return (letting serve
// close the usage recorder and the database) while handlers are still
// running: a stream cut by srv.Close meters what it delivered on its way
// out, and that record would meet a closed recorder and be lost.
func TestReviewServeHTTPWaitsForHandlersAfterDrain(t *testing.T) {
	var finished atomic.Bool
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()               // cut by srv.Close after the drain period
		time.Sleep(200 * time.Millisecond) // e.g. committing the usage record
		finished.Store(true)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveHTTP(ctx, ln, h, 100*time.Millisecond, 20*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("serveHTTP returned while a handler was still running")
	}
}
