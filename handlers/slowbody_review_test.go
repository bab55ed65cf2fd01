package handlers_test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An unauthenticated client that trickled a chunked body got no answer:
// net/http discards up to 256 KiB of unread body before writing the 401,
// with no read deadline, so the connection and its goroutine are held for
// as long as the client kept trickling. Now the 401 comes at once with
// Connection: close, and every body has Config.BodyTimeout to arrive.
func TestReviewUnreadBodyHoldsConnection(t *testing.T) {
	_, ts := newFakeServer(t, "2s")
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"))
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no 401 within 3 s while the body trickles: %v", err)
	}
	resp.Body.Close()
}
