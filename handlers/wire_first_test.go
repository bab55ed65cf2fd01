package handlers_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// gatedWriter holds every "request" (access log) line until open is
// closed, as a slow log sink would; other lines pass.
type gatedWriter struct {
	next    io.Writer
	open    chan struct{}
	waiting chan struct{} // closed when the first access line waits
	once    sync.Once
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"msg":"request"`)) {
		g.once.Do(func() { close(g.waiting) })
		<-g.open
	}
	return g.next.Write(p)
}

// An answer is on the wire, whole and with its length, before the access
// log and the rest of the chain run: a client reads it while the log line
// is still being written.
func TestAnswerLeavesBeforeTheAccessLog(t *testing.T) {
	fake := newFakeOllama(t)
	for _, tc := range []struct{ path, body string }{
		{"/generate", generateBody},
		{"/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":"hi"}]}`},
		{"/api/generate", `{"model":"chat","prompt":"hi","stream":false}`},
	} {
		// A server per path: the held line holds the log's lock.
		gate := &gatedWriter{open: make(chan struct{}), waiting: make(chan struct{})}
		ts := newTestServer(t, fakeCatalog(fake.URL, "10s"), withLogWriter(func(w io.Writer) io.Writer { gate.next = w; return gate }))
		req, err := http.NewRequest("POST", ts.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", ts.key)
		type got struct {
			status int
			length int64
			body   []byte
			err    error
		}
		done := make(chan got, 1)
		go func() {
			resp, err := ts.client.Do(req)
			if err != nil {
				done <- got{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			done <- got{resp.StatusCode, resp.ContentLength, b, err}
		}()
		select {
		case g := <-done:
			if g.err != nil || g.status != 200 || g.length != int64(len(g.body)) || !json.Valid(g.body) {
				t.Fatalf("%s: %d, Content-Length %d, %d bytes %s (%v)", tc.path, g.status, g.length, len(g.body), g.body, g.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the answer did not reach the client while its access log line was held", tc.path)
		}
		<-gate.waiting // the line was indeed being held meanwhile
		close(gate.open)
	}
}
