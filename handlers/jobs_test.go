package handlers_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/gateway"
	"tollgate/handlers"
	"tollgate/inference/ollamatest"
	"tollgate/jobs"
	"tollgate/metering"
	"tollgate/storage/sqlite"
	"tollgate/webhook/webhooktest"
)

// jobView is GET /jobs/{id}, decoded by the test.
type jobView struct {
	ID         string          `json:"id"`
	Status     string          `json:"status"`
	StatusURL  string          `json:"status_url"`
	RequestID  string          `json:"request_id"`
	Result     json.RawMessage `json:"result"`
	Error      *errorDetail    `json:"error"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	Delivery   *struct {
		State    string `json:"state"`
		Attempts []struct {
			Status int    `json:"status"`
			Error  string `json:"error"`
		} `json:"attempts"`
	} `json:"delivery"`
}

// allowLoopback lets callbacks reach httptest receivers.
func allowLoopback(c *jobs.Config) {
	c.Guard = jobs.NewGuard([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	c.Delivery = jobs.Backoff{First: 5 * time.Millisecond, Max: 20 * time.Millisecond, Attempts: 5}
}

// webhookSecret gets the test key a signing secret through the API.
func (ts *testServer) webhookSecret(t *testing.T) string {
	t.Helper()
	var out struct {
		WebhookSecret string `json:"webhook_secret"`
	}
	ts.doJSON(t, "POST", "/keys/self/webhook-secret/rotate", nil, http.StatusOK, &out)
	if !strings.HasPrefix(out.WebhookSecret, "whsec_") {
		t.Fatalf("webhook_secret %q, want whsec_...", out.WebhookSecret)
	}
	return out.WebhookSecret
}

// verify checks a delivery's signature per Standard Webhooks, written here
// independently of package jobs: HMAC-SHA256 keyed with the base64-decoded
// secret after "whsec_", over "id.timestamp.body", base64, prefixed "v1,";
// the header may hold several space-separated signatures.
func verify(t *testing.T, d webhooktest.Delivery, secret string) {
	t.Helper()
	id, ts, sig := d.ID(), d.Header.Get("webhook-timestamp"), d.Header.Get("webhook-signature")
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("secret: %v", err)
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, id+"."+ts+".")
	mac.Write(d.Body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(sig) {
		if hmac.Equal([]byte(s), []byte(want)) {
			unix, err := strconv.ParseInt(ts, 10, 64)
			if err != nil || time.Since(time.Unix(unix, 0)).Abs() > 5*time.Minute {
				t.Errorf("webhook-timestamp %q is not a current Unix time", ts)
			}
			return
		}
	}
	t.Errorf("webhook-signature %q does not verify (want %s)", sig, want)
}

// newReceiver records callbacks; fail says how many to answer 500 first.
func newReceiver(t *testing.T, fail int) *webhooktest.Receiver {
	return webhooktest.NewReceiver(t, func(n int) int {
		if n <= fail {
			return http.StatusInternalServerError
		}
		return http.StatusNoContent
	})
}

// submit posts a job and checks the 202.
func (ts *testServer) submit(t *testing.T, body any, hdr ...string) string {
	t.Helper()
	var acc struct {
		ID, Status, StatusURL string
	}
	var raw map[string]string
	resp := ts.doJSON(t, "POST", "/jobs", body, http.StatusAccepted, &raw, hdr...)
	acc.ID, acc.Status, acc.StatusURL = raw["id"], raw["status"], raw["status_url"]
	if !strings.HasPrefix(acc.ID, "job_") || acc.Status != "queued" || acc.StatusURL != "/jobs/"+acc.ID {
		t.Fatalf("202 body %v", raw)
	}
	if loc := resp.Header.Get("Location"); loc != acc.StatusURL {
		t.Errorf("Location %q, want %q", loc, acc.StatusURL)
	}
	return acc.ID
}

// waitJob polls the job until its status is final (or want).
func (ts *testServer) waitJob(t *testing.T, id string, want ...string) jobView {
	t.Helper()
	var v jobView
	waitFor(t, "job "+id+" to finish", func() bool {
		v = jobView{}
		ts.doJSON(t, "GET", "/jobs/"+id, nil, http.StatusOK, &v)
		if len(want) > 0 {
			return v.Status == want[0]
		}
		return v.Status == "succeeded" || v.Status == "failed" || v.Status == "cancelled"
	})
	return v
}

// jobUsageRows counts usage rows whose request id starts with prefix.
func (ts *testServer) jobUsageRows(t *testing.T, prefix string) int {
	t.Helper()
	ts.flushUsage(t)
	db, err := sql.Open("sqlite3", "file:"+ts.dbPath+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM usage WHERE request_id LIKE ? || '%'`, prefix).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestJobWithSignedCallback(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withJobs(allowLoopback))
	secret := ts.webhookSecret(t)
	rcv := newReceiver(t, 0)
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": "hi"},
		"callback_url": rcv.URL + "/hook"})
	waitFor(t, "the callback", func() bool { return len(rcv.Deliveries()) == 1 })
	d := rcv.Deliveries()[0]
	verify(t, d, secret)
	var cb jobView
	if err := json.Unmarshal(d.Body, &cb); err != nil {
		t.Fatal(err)
	}
	v := ts.waitJob(t, id)
	if cb.ID != id || cb.Status != "succeeded" || v.Status != "succeeded" {
		t.Fatalf("callback %+v, job %+v", cb, v)
	}
	var res generateResponse
	if err := json.Unmarshal(v.Result, &res); err != nil || res.Text == "" || res.Model != "chat" || res.ID != v.RequestID || res.Usage.TotalTokens == 0 {
		t.Errorf("result %s (%v), want the /generate body", v.Result, err)
	}
	if string(cb.Result) != string(v.Result) {
		t.Errorf("callback result %s, GET result %s", cb.Result, v.Result)
	}
	waitFor(t, "the delivery to be recorded", func() bool {
		v = ts.waitJob(t, id)
		return v.Delivery != nil && v.Delivery.State == "delivered"
	})
	if len(v.Delivery.Attempts) != 1 || v.Delivery.Attempts[0].Status != 204 {
		t.Errorf("attempts %+v", v.Delivery.Attempts)
	}
	if n := ts.jobUsageRows(t, id); n != 1 {
		t.Errorf("%d usage rows for the job, want 1", n)
	}
	// Rotation: the old secret no longer signs.
	if again := ts.webhookSecret(t); again == secret {
		t.Error("rotation returned the same secret")
	}
}

func TestJobCallbackRetriedWithOneWebhookID(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withJobs(allowLoopback))
	secret := ts.webhookSecret(t)
	rcv := newReceiver(t, 2)
	id := ts.submit(t, map[string]any{"endpoint": "embed", "request": map[string]any{"model": "embedder", "input": "x"},
		"callback_url": rcv.URL})
	var v jobView
	waitFor(t, "delivered", func() bool {
		v = ts.waitJob(t, id)
		return v.Delivery != nil && v.Delivery.State == "delivered"
	})
	got := rcv.Deliveries()
	if len(got) != 3 {
		t.Fatalf("%d deliveries, want 3", len(got))
	}
	for _, d := range got {
		verify(t, d, secret)
		if d.ID() != got[0].ID() || d.ID() == "" {
			t.Errorf("webhook-id %q, want %q on every retry", d.ID(), got[0].ID())
		}
		if string(d.Body) != string(got[0].Body) {
			t.Errorf("retry body differs")
		}
	}
	if len(v.Delivery.Attempts) != 3 || v.Delivery.Attempts[0].Status != 500 || v.Delivery.Attempts[2].Status != 204 {
		t.Errorf("attempts %+v", v.Delivery.Attempts)
	}
}

func TestJobCallbackToLoopbackRefused(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withJobs(func(c *jobs.Config) {
		c.Delivery = jobs.Backoff{First: time.Millisecond, Max: time.Millisecond, Attempts: 1}
	}))
	ts.webhookSecret(t)
	rcv := newReceiver(t, 0)
	req := map[string]any{"model": "chat", "prompt": "hi"}
	for _, u := range []string{rcv.URL, strings.Replace(rcv.URL, "http:", "https:", 1), "https://169.254.169.254/x", "https://[::1]/x", "https://10.1.2.3/", "ftp://example.com/"} {
		ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "generate", "request": req, "callback_url": u}, 400, "invalid_request", []string{"callback_url"})
	}
	// A name that resolves to loopback passes the submit check and is
	// refused at connect time.
	host := strings.Replace(rcv.URL, "http://127.0.0.1", "https://localhost", 1)
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": req, "callback_url": host})
	var v jobView
	waitFor(t, "the delivery to give up", func() bool {
		v = ts.waitJob(t, id)
		return v.Delivery != nil && v.Delivery.State == "failed"
	})
	if len(v.Delivery.Attempts) != 1 || !strings.Contains(v.Delivery.Attempts[0].Error, "callback refused") {
		t.Errorf("attempts %+v, want one refused", v.Delivery.Attempts)
	}
	if len(rcv.Deliveries()) != 0 {
		t.Error("the receiver was reached")
	}
}

func TestJobCallbackWithoutSecretRefused(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"), withJobs(allowLoopback))
	ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "generate", "request": map[string]any{"prompt": "x"},
		"callback_url": "https://example.com/"}, 400, "invalid_request", []string{"webhook-secret/rotate"})
}

func TestPreferRespondAsync(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	for _, c := range []struct{ path, body string }{
		{"/generate", `{"model":"chat","prompt":"hi"}`},
		{"/embed", `{"model":"embedder","input":["a","b"]}`},
		{"/predict", `{"task":"sentiment","input":"great"}`},
	} {
		var acc map[string]string
		resp := ts.doJSON(t, "POST", c.path, c.body, http.StatusAccepted, &acc, "Prefer", "respond-async, wait=5")
		if resp.Header.Get("Preference-Applied") != "respond-async" || resp.Header.Get("Location") != acc["status_url"] {
			t.Errorf("%s: headers %v", c.path, resp.Header)
		}
		v := ts.waitJob(t, acc["id"])
		if v.Status != "succeeded" || len(v.Result) == 0 {
			t.Errorf("%s: job %+v", c.path, v)
		}
	}
	// A bad body is a 400 now, not a failed job later.
	ts.doError(t, "POST", "/generate", `{"model":"chat","prompt":3}`, 400, "invalid_request", []string{"prompt"}, "Prefer", "respond-async")
	ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "generate", "request": map[string]any{"promt": "x"}}, 400, "invalid_request", []string{"request.promt"})
	ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "generate", "request": map[string]any{"prompt": "x", "stream": true}}, 400, "invalid_request", []string{"stream"})
	ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "chat", "request": map[string]any{"prompt": "x"}}, 400, "invalid_request", []string{"endpoint"})
	ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "embed"}, 400, "invalid_request", []string{"request"})
}

func TestJobOnlyItsKeySeesIt(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"), withJobsStopped())
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"prompt": "x"}})
	_, other, err := ts.keys.Create(t.Context(), "test", auth.Spec{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	ts.doError(t, "GET", "/jobs/"+id, nil, 404, "job_not_found", nil, "X-API-Key", other)
	ts.doError(t, "DELETE", "/jobs/"+id, nil, 404, "job_not_found", nil, "X-API-Key", other)
	ts.doError(t, "GET", "/jobs/job_nope", nil, 404, "job_not_found", nil)
	// An admin key sees every job.
	_, admin, err := ts.keys.Create(t.Context(), "test", auth.Spec{Name: "admin", Scopes: []auth.Scope{auth.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	ts.doJSON(t, "GET", "/jobs/"+id, nil, 200, nil, "X-API-Key", admin)
	// A key without the endpoint's scope cannot queue a job for it.
	_, embedOnly, err := ts.keys.Create(t.Context(), "test", auth.Spec{Name: "e", Scopes: []auth.Scope{auth.ScopeEmbed}})
	if err != nil {
		t.Fatal(err)
	}
	ts.doError(t, "POST", "/jobs", map[string]any{"endpoint": "generate", "request": map[string]any{"prompt": "x"}}, 403, "insufficient_scope", nil, "X-API-Key", embedOnly)
	ts.doError(t, "POST", "/generate", `{"prompt":"x"}`, 403, "insufficient_scope", nil, "X-API-Key", embedOnly, "Prefer", "respond-async")
}

func TestJobCancelQueued(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withJobsStopped())
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": "x"}})
	var v jobView
	ts.doJSON(t, "DELETE", "/jobs/"+id, nil, 200, &v)
	if v.Status != "cancelled" {
		t.Fatalf("after DELETE: %+v", v)
	}
	ts.doError(t, "DELETE", "/jobs/"+id, nil, 409, "job_already_finished", nil)
	ts.jobs.Start()
	other := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": "y"}})
	ts.waitJob(t, other)
	if v := ts.waitJob(t, id); v.Status != "cancelled" {
		t.Errorf("the cancelled job became %s", v.Status)
	}
	if n := fake.Stats().Requests; n != 1 {
		t.Errorf("Ollama got %d requests, want 1 (the cancelled job never runs)", n)
	}
}

func TestJobCancelRunning(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithFault(ollamatest.SlowFirstByte(3*time.Second)))
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"))
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": "x"}})
	ts.waitJob(t, id, "running")
	waitFake(t, fake, "the call to reach Ollama", func(s ollamatest.Stats) bool { return s.InFlight == 1 })
	ts.doJSON(t, "DELETE", "/jobs/"+id, nil, 200, nil)
	v := ts.waitJob(t, id)
	if v.Status != "cancelled" {
		t.Fatalf("job %+v, want cancelled", v)
	}
	// Billed what the gateway bills a call cut before its answer: nothing,
	// in one usage row.
	if n := ts.jobUsageRows(t, id); n != 1 {
		t.Errorf("%d usage rows, want 1", n)
	}
}

// TestJobsSurviveARestart: a first Manager claims a job and dies with it
// (abandoned mid-run, another job still queued); a second one over the same
// file runs both, each once and billed once. A third job whose run was
// billed before the crash is failed, not run again.
func TestJobsSurviveARestart(t *testing.T) {
	fake := newFakeOllama(t)
	clock := authtest.NewClock(time.Now())
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withClock(clock.Now), withJobsStopped(),
		withJobs(func(c *jobs.Config) { c.JobTimeout = time.Minute }))
	body := func(p string) map[string]any {
		return map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": p}}
	}
	running := ts.submit(t, body("a"))
	clock.Advance(time.Millisecond)
	queued := ts.submit(t, body("b"))

	// The first instance: its own handle on the file; its run never ends.
	db1, err := sqlite.Open(t.Context(), ts.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db1.Close() })
	started := make(chan string, 4)
	m1 := jobs.New(jobs.Config{Store: db1, Keys: db1, Workers: 1, Poll: 5 * time.Millisecond, Now: clock.Now, JobTimeout: time.Minute, FlushUsage: ts.journal.Flush,
		Run: func(ctx context.Context, c gateway.Caller, _ string, _ json.RawMessage) (json.RawMessage, error) {
			started <- c.RequestID
			<-ctx.Done() // the crash: nothing after this is ever stored
			return nil, ctx.Err()
		}})
	m1.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m1.Stop(ctx)
	})
	if rid := <-started; !strings.HasPrefix(rid, running) {
		t.Fatalf("first instance ran %s, want %s", rid, running)
	}
	if v := ts.waitJob(t, running, "running"); v.Status != "running" {
		t.Fatal(v.Status)
	}
	if v := ts.waitJob(t, queued, "queued"); v.Status != "queued" {
		t.Fatal(v.Status)
	}

	// The restart: the lease of the dead run ends, the second instance
	// takes over.
	clock.Advance(time.Hour)
	ts.jobs.Start()
	for _, id := range []string{running, queued} {
		v := ts.waitJob(t, id)
		if v.Status != "succeeded" {
			t.Errorf("job %s: %+v", id, v)
		}
		if n := ts.jobUsageRows(t, id); n != 1 {
			t.Errorf("job %s: %d usage rows, want 1", id, n)
		}
	}
	if n := fake.Stats().Requests; n != 2 {
		t.Errorf("Ollama ran %d requests, want 2", n)
	}
}

// TestJobBilledBeforeCrashNotRunAgain: a run that committed its usage and
// died before storing its result is failed "interrupted after billing",
// never run (or billed) twice.
func TestJobBilledBeforeCrashNotRunAgain(t *testing.T) {
	fake := newFakeOllama(t)
	clock := authtest.NewClock(time.Now())
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withClock(clock.Now), withJobsStopped(),
		withJobs(func(c *jobs.Config) { c.JobTimeout = time.Minute }))
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": "a"}})
	db1, err := sqlite.Open(t.Context(), ts.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db1.Close() })
	real := ts.runner()
	billed := make(chan error, 1)
	m1 := jobs.New(jobs.Config{Store: db1, Keys: db1, Workers: 1, Poll: 5 * time.Millisecond, Now: clock.Now, JobTimeout: time.Minute, FlushUsage: ts.journal.Flush,
		Run: func(ctx context.Context, c gateway.Caller, ep string, req json.RawMessage) (json.RawMessage, error) {
			_, err := real(ctx, c, ep, req) // billed...
			billed <- err
			<-ctx.Done() // ...and the process dies before the result is stored
			return nil, errors.New("crashed")
		}})
	m1.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m1.Stop(ctx)
	})
	if err := <-billed; err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	ts.jobs.Start()
	v := ts.waitJob(t, id)
	if v.Status != "failed" || v.Error == nil || !strings.Contains(v.Error.Message, "interrupted after billing") {
		t.Fatalf("job %+v, want failed: interrupted after billing", v)
	}
	if n := ts.jobUsageRows(t, id); n != 1 {
		t.Errorf("%d usage rows, want 1", n)
	}
	if n := fake.Stats().Requests; n != 1 {
		t.Errorf("Ollama ran %d requests, want 1", n)
	}
}

func (ts *testServer) runner() jobs.Runner { return handlers.JobRunner(ts.gw) }

// A job's usage row is in the database by the time its result is: a
// process that died in between would otherwise leave a run another
// instance thinks unbilled (and runs, and bills, again). The journal here
// loads only when flushed.
func TestJobUsageIsInTheDatabaseBeforeItsResult(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withJournalLoadEvery(time.Hour))
	// The first record is loaded at once (the loader starts idle); later
	// ones wait an hour unless flushed.
	ts.doJSON(t, "POST", "/generate", map[string]any{"model": "chat", "prompt": "warm"}, 200, nil)
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "chat", "prompt": "a"}})
	if v := ts.waitJob(t, id); v.Status != "succeeded" {
		t.Fatalf("job %+v", v)
	}
	n := 0
	err := ts.db.ExportEvents(context.Background(), metering.Query{}, func(ev metering.Event) error {
		if strings.HasPrefix(ev.RequestID, id) {
			n++
		}
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("%d usage rows of the job in the database when its result was stored (%v), want 1", n, err)
	}
}
