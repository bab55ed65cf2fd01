package handlers_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSlowBodyEndsAtDeadline: a body that stops arriving ends with its 408
// (or the 401) sent and the connection closed at the body deadline,
// whatever the key. With a valid key the handler read until the deadline,
// then net/http tried to discard the rest of the body with the deadline
// lifted, so the client never got its 408 and the connection was held for
// as long as the client kept it open.
func TestSlowBodyEndsAtDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withBodyTimeout(timeout))
	for _, tc := range []struct {
		name, key, framing string
		status             int
		code               string
	}{
		{"valid key, Content-Length", ts.key, "Content-Length: 100\r\n", http.StatusRequestTimeout, "body_timeout"},
		{"valid key, chunked", ts.key, "Transfer-Encoding: chunked\r\n", http.StatusRequestTimeout, "body_timeout"},
		{"bad key, Content-Length", "tg_wrong", "Content-Length: 100\r\n", http.StatusUnauthorized, "invalid_api_key"},
		{"no key, chunked", "", "Transfer-Encoding: chunked\r\n", http.StatusUnauthorized, "missing_api_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			head := "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + tc.framing
			if tc.key != "" {
				head += "X-API-Key: " + tc.key + "\r\n"
			}
			first := "{"
			if strings.Contains(tc.framing, "chunked") {
				first = "1\r\n{\r\n"
			}
			start := time.Now()
			if _, err := conn.Write([]byte(head + "\r\n" + first)); err != nil {
				t.Fatal(err)
			}
			// The body never comes. Wait well past the deadline, but fail
			// rather than hang if the server does not answer.
			_ = conn.SetReadDeadline(start.Add(timeout + 3*time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer %v after the body stopped (deadline %v): %v", time.Since(start).Round(time.Millisecond), timeout, err)
			}
			var env struct {
				Error struct{ Code string } `json:"error"`
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || json.Unmarshal(data, &env) != nil || env.Error.Code != tc.code {
				t.Errorf("got %s %s, want %d %s", resp.Status, data, tc.status, tc.code)
			}
			if tc.status == http.StatusRequestTimeout && time.Since(start) < timeout {
				t.Errorf("408 after %v, before the %v deadline", time.Since(start), timeout)
			}
			// Then the server closes the connection, at the deadline.
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the connection is still open %v after the request began (body deadline %v)", time.Since(start).Round(time.Millisecond), timeout)
				}
				t.Fatalf("after the answer: %v, want the connection closed", err)
			}
		})
	}
}
