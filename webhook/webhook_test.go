package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tollgate/webhook"
)

// The example of the Standard Webhooks specification.
const (
	exampleSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	exampleID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	exampleBody   = `{"test": 2432232314}`
	exampleSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

var exampleTime = time.Unix(1614265330, 0)

func TestSignStandardWebhooksExample(t *testing.T) {
	got, err := webhook.Sign(exampleSecret, exampleID, exampleTime, []byte(exampleBody))
	if err != nil {
		t.Fatal(err)
	}
	if got != exampleSig {
		t.Errorf("Sign = %s, want %s", got, exampleSig)
	}
}

func TestVerify(t *testing.T) {
	h := http.Header{}
	h.Set(webhook.HeaderID, exampleID)
	h.Set(webhook.HeaderTimestamp, "1614265330")
	h.Set(webhook.HeaderSignature, "v1,bm90IHRoaXMgb25l "+exampleSig) // several: any may match
	if err := webhook.Verify(exampleSecret, h, []byte(exampleBody), exampleTime.Add(time.Minute), 5*time.Minute); err != nil {
		t.Errorf("Verify of the specification's example: %v", err)
	}
	if err := webhook.Verify(exampleSecret, h, []byte(exampleBody+" "), exampleTime, 5*time.Minute); err == nil {
		t.Error("Verify accepted a changed body")
	}
	if err := webhook.Verify(webhook.NewSecret(), h, []byte(exampleBody), exampleTime, 5*time.Minute); err == nil {
		t.Error("Verify accepted another secret")
	}
	if err := webhook.Verify(exampleSecret, h, []byte(exampleBody), exampleTime.Add(6*time.Minute), 5*time.Minute); err == nil {
		t.Error("Verify accepted a timestamp 6 minutes old")
	}
}

func TestParseSecret(t *testing.T) {
	if err := webhook.ParseSecret(webhook.NewSecret()); err != nil {
		t.Errorf("a new secret: %v", err)
	}
	for _, bad := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64", "whsec_c2hvcnQ=" /* 5 bytes */} {
		err := webhook.ParseSecret(bad)
		if err == nil {
			t.Errorf("ParseSecret(%q) accepted it", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("ParseSecret's error %q repeats the secret", err)
		}
	}
}

func TestParseURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://example.com/hook": true, "http://127.0.0.1:9/": true,
		"/relative": false, "ftp://example.com/": false, "https://u:p@example.com/": false,
		"https://example.com/" + strings.Repeat("a", 2048): false,
	} {
		if _, err := webhook.ParseURL(raw); (err == nil) != ok {
			t.Errorf("ParseURL(%.40s) = %v, want ok=%v", raw, err, ok)
		}
	}
}

// Post sends the three headers, signed; an error names neither the URL
// (which may carry a token) nor the secret; a redirect is not followed.
func TestPost(t *testing.T) {
	secret := webhook.NewSecret()
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	at := time.Now()
	status, err := webhook.Post(context.Background(), webhook.NewClient(time.Second, nil), srv.URL+"/hook?token=s3cr3t", secret, "msg_1", at, []byte(`{}`))
	if err != nil || status != http.StatusFound {
		t.Fatalf("Post = %d, %v; want 302 (not followed)", status, err)
	}
	if err := webhook.Verify(secret, got, []byte(`{}`), at, time.Second); err != nil || got.Get(webhook.HeaderID) != "msg_1" {
		t.Errorf("headers %v: %v", got, err)
	}
	srv.Close()
	_, err = webhook.Post(context.Background(), webhook.NewClient(time.Second, nil), srv.URL+"/hook?token=s3cr3t", secret, "msg_1", at, []byte(`{}`))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), secret) {
		t.Errorf("Post to a closed server: error %v; want one without the URL's token or the secret", err)
	}
}
