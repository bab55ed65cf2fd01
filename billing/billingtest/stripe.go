package billingtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/billing"
)

// StartStripeMock starts Stripe's mock API server (stripe-mock: from
// $TOLLGATE_TEST_STRIPE_MOCK_BIN, $PATH or $HOME/go/bin) on a free port for
// the test and returns its base URL. Without the binary the test is skipped,
// loudly, or fails when TOLLGATE_REQUIRE_STRIPE=1 (scripts/test.sh installs
// it and sets that).
func StartStripeMock(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("TOLLGATE_TEST_STRIPE_MOCK_BIN")
	if bin == "" {
		bin, _ = exec.LookPath("stripe-mock")
	}
	if bin == "" {
		if home, err := os.UserHomeDir(); err == nil {
			if p := filepath.Join(home, "go", "bin", "stripe-mock"); fileExists(p) {
				bin = p
			}
		}
	}
	if bin == "" {
		msg := "stripe-mock is not installed (go install github.com/stripe/stripe-mock@v0.203.0): " +
			"THE STRIPE EXPORT TESTS DID NOT RUN"
		if os.Getenv("TOLLGATE_REQUIRE_STRIPE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stripe-mock: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		const prefix = "Listening for HTTP at address: "
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, prefix) {
				addr <- strings.TrimSpace(strings.TrimPrefix(line, prefix))
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("stripe-mock did not say where it listens within 30 s")
		return ""
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Proxy stands in front of stripe-mock as Stripe itself would behave for
// meter events: it records every event the mock accepts in Ledger, refuses
// an identifier it already holds (400, "An event already exists with
// identifier ..."), and fails calls on demand. stripe-mock checks each
// request's shape and key but keeps nothing, so the Ledger is the truth of
// what was billed. Safe for concurrent use.
type Proxy struct {
	*Ledger
	upstream *httputil.ReverseProxy

	mu      sync.Mutex
	refuse  int           // calls to refuse with 500 before reaching Stripe
	lose    int           // calls to accept, then answer 502 as if the answer was lost
	hold    chan struct{} // when set, answers to accepted events wait for it to close
	calls   int
	holding int
}

// NewProxy returns a Proxy to the stripe-mock at mockURL.
func NewProxy(mockURL string) (*Proxy, error) {
	u, err := url.Parse(mockURL)
	if err != nil {
		return nil, err
	}
	return &Proxy{Ledger: NewLedger(), upstream: httputil.NewSingleHostReverseProxy(u)}, nil
}

// StartStripe starts stripe-mock (StartStripeMock) and a Proxy in front of
// it for the test, and returns the proxy and its URL, the API base to give
// the sender.
func StartStripe(t testing.TB) (*Proxy, string) {
	t.Helper()
	p, err := NewProxy(StartStripeMock(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// Refuse makes the next n meter event calls fail with 500.
func (p *Proxy) Refuse(n int) { p.mu.Lock(); p.refuse += n; p.mu.Unlock() }

// Lose makes the next n meter event calls be accepted and answered 502.
func (p *Proxy) Lose(n int) { p.mu.Lock(); p.lose += n; p.mu.Unlock() }

// Hold makes the answers to meter events Stripe accepted wait until the
// returned func is called (or the caller gives up).
func (p *Proxy) Hold() (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.hold = ch
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
			close(ch)
		})
	}
}

// Calls counts meter event calls; holding those whose answer waits on Hold.
func (p *Proxy) Calls() (calls, holding int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.holding
}

// ServeHTTP handles one call.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/billing/meter_events" {
		p.upstream.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.calls++
	refuse, lose := p.refuse > 0, false
	if refuse {
		p.refuse--
	} else if p.lose > 0 {
		p.lose--
		lose = true
	}
	p.mu.Unlock()
	if refuse {
		stripeError(w, http.StatusInternalServerError, "api_error", "", "An unknown error occurred (refused by the test proxy).")
		return
	}
	ev, err := eventOf(form)
	if err != nil {
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "", err.Error())
		return
	}
	p.Ledger.mu.Lock()
	_, dup := p.Ledger.events[ev.Identifier]
	p.Ledger.mu.Unlock()
	if dup {
		p.Accept(ev) // counts the duplicate
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "",
			"An event already exists with identifier "+ev.Identifier+".")
		return
	}
	rec := &recorder{header: make(http.Header)}
	r.Body = io.NopCloser(bytes.NewReader(body))
	p.upstream.ServeHTTP(rec, r)
	if rec.status == http.StatusOK {
		p.Accept(ev)
	}
	p.mu.Lock()
	hold := p.hold
	if hold != nil {
		p.holding++
	}
	p.mu.Unlock()
	if hold != nil { // accepted; the answer waits (a process killed now never hears it)
		select {
		case <-hold:
		case <-r.Context().Done():
		}
		p.mu.Lock()
		p.holding--
		p.mu.Unlock()
	}
	if lose {
		stripeError(w, http.StatusBadGateway, "api_error", "", "the answer was lost (test proxy)")
		return
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

// eventOf reads a meter event from a form body.
func eventOf(form url.Values) (billing.Event, error) {
	ev := billing.Event{Identifier: form.Get("identifier"), EventName: form.Get("event_name"),
		CustomerID: form.Get("payload[stripe_customer_id]")}
	v, err := strconv.ParseInt(form.Get("payload[value]"), 10, 64)
	if err != nil {
		return ev, fmt.Errorf("payload[value] %q is not a whole number", form.Get("payload[value]"))
	}
	ts, err := strconv.ParseInt(form.Get("timestamp"), 10, 64)
	if err != nil {
		return ev, fmt.Errorf("timestamp %q is not a Unix time", form.Get("timestamp"))
	}
	if ev.Identifier == "" || ev.EventName == "" || ev.CustomerID == "" {
		return ev, fmt.Errorf("identifier, event_name and payload[stripe_customer_id] are required")
	}
	ev.Value, ev.Timestamp = v, time.Unix(ts, 0).UTC()
	return ev, nil
}

func stripeError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"type":%q,"code":%q,"message":%q}}`, typ, code, msg)
}

// recorder keeps an upstream answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int)   { r.status = s }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
