package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"tollgate/webhook"
)

// keys create --json prints the key's webhook secret; serve with
// --callback-allow-net 127.0.0.0/8 delivers a job's signed callback to a
// loopback receiver, and without it refuses the URL.
func TestServeJobCallback(t *testing.T) {
	fake := newFake(t)
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- b
		got <- r
	}))
	t.Cleanup(rcv.Close)
	job := map[string]any{"endpoint": "generate", "request": map[string]any{"model": "tiny", "prompt": "hi"}, "callback_url": rcv.URL}

	srv := serveOn(t, fake, "--callback-allow-net", "127.0.0.0/8")
	out := cliAt(t, time.Now, "keys", "create", "--db", srv.db, "--name", "hooks", "--json")
	var created struct{ Key, WebhookSecret string }
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	created.Key, _ = raw["key"].(string)
	created.WebhookSecret, _ = raw["webhook_secret"].(string)
	if !strings.HasPrefix(created.WebhookSecret, "whsec_") {
		t.Fatalf("keys create --json printed no webhook_secret: %s", out)
	}
	if status := postJob(t, srv.url, created.Key, job); status != http.StatusAccepted {
		t.Fatalf("POST /jobs: %d", status)
	}
	select {
	case r := <-got:
		body := <-bodies
		sec := r.Header.Get("webhook-timestamp")
		var unix int64
		if err := json.Unmarshal([]byte(sec), &unix); err != nil {
			t.Fatalf("webhook-timestamp %q", sec)
		}
		want, err := webhook.Sign(created.WebhookSecret, r.Header.Get("webhook-id"), time.Unix(unix, 0), body)
		if err != nil || r.Header.Get("webhook-signature") != want {
			t.Errorf("signature %q, want %q (%v)", r.Header.Get("webhook-signature"), want, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no callback")
	}

	plain := serveOn(t, fake)
	key := cliAt(t, time.Now, "keys", "create", "--db", plain.db, "--name", "k", "--json")
	if err := json.Unmarshal([]byte(key), &raw); err != nil {
		t.Fatal(err)
	}
	if status := postJob(t, plain.url, raw["key"].(string), job); status != http.StatusBadRequest {
		t.Errorf("POST /jobs to a loopback callback without --callback-allow-net: %d, want 400", status)
	}
}

func postJob(t *testing.T, url, key string, job any) int {
	t.Helper()
	b, _ := json.Marshal(job)
	req, _ := http.NewRequest("POST", url+"/jobs", bytes.NewReader(b))
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestServeBadCallbackAllowNet(t *testing.T) {
	r := runCLI(env(), "serve", "--db", t.TempDir()+"/x.db", "--callback-allow-net", "10.0.0.0/8,localhost")
	if r.err == nil || !strings.Contains(r.err.Error(), "--callback-allow-net") {
		t.Errorf("serve --callback-allow-net localhost: %v", r.err)
	}
}
