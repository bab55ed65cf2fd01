// Package webhooktest is a webhook receiver for tests: a real HTTP server
// that keeps every request it gets and answers as the test says.
package webhooktest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"tollgate/webhook"
)

// Delivery is one request the receiver got.
type Delivery struct {
	Header http.Header
	Body   []byte
}

// ID is the delivery's webhook-id.
func (d Delivery) ID() string { return d.Header.Get(webhook.HeaderID) }

// Verify checks the delivery's signature with secret, and that its
// webhook-timestamp is within 5 minutes of now (webhook.Verify).
func (d Delivery) Verify(secret string, now time.Time) error {
	return webhook.Verify(secret, d.Header, d.Body, now, 5*time.Minute)
}

// Receiver is a running receiver.
type Receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []Delivery
}

// NewReceiver starts a receiver, closed when the test ends. answer (nil:
// always 204) gives the status of the n-th request (1-based); 0 hangs until
// the sender gives up.
func NewReceiver(t testing.TB, answer func(n int) int) *Receiver {
	r := &Receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, Delivery{Header: req.Header.Clone(), Body: body})
		n := len(r.got)
		r.mu.Unlock()
		status := http.StatusNoContent
		if answer != nil {
			status = answer(n)
		}
		if status == 0 {
			<-req.Context().Done()
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

// Deliveries returns what the receiver got so far, in order.
func (r *Receiver) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}
