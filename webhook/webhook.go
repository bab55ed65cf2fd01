// Package webhook is Tollgate's side of Standard Webhooks
// (https://www.standardwebhooks.com/): signing secrets, the signature, the
// three headers, the shape every webhook URL must have, and one signed
// POST. Job callbacks (package jobs) and budget alerts (package alerts)
// both send through it; what to send, where, and how often to retry is
// theirs.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"        // the message's id, the same on every retry
	HeaderTimestamp = "webhook-timestamp" // Unix seconds of this attempt
	HeaderSignature = "webhook-signature" // space-separated "v1,<base64>" values
)

// The sizes ParseSecret accepts, in decoded bytes: the specification's
// range (24 to 64 bytes; NewSecret makes 32).
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
)

// NewSecret returns a new signing secret: whsec_ and the base64 of 32
// random bytes.
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// ParseSecret checks a secret an operator gives: whsec_ and the standard
// base64 of 24 to 64 bytes. The error never repeats the secret.
func ParseSecret(s string) error {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), SecretPrefix)
	if !ok {
		return errors.New("must start with " + SecretPrefix + " (a Standard Webhooks secret)")
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return errors.New("the part after " + SecretPrefix + " is not standard base64")
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return fmt.Errorf("the part after %s must decode to %d to %d bytes, not %d", SecretPrefix, MinSecretBytes, MaxSecretBytes, len(key))
	}
	return nil
}

// Sign returns the webhook-signature value for a message: "v1," and the
// base64 of HMAC-SHA256 over id.timestamp.body, keyed with the secret's
// decoded bytes (the part after whsec_).
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(secret), SecretPrefix))
	if err != nil {
		return "", errors.New("webhook: the signing secret is not base64")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// Verify checks a received message as a receiver must: one of the
// signatures in h's webhook-signature is body's, signed with secret (compared
// in constant time), and its webhook-timestamp is within tolerance of now.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	unix, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return errors.New("webhook: no valid " + HeaderTimestamp)
	}
	ts := time.Unix(unix, 0)
	if now.Sub(ts).Abs() > tolerance {
		return fmt.Errorf("webhook: %s is %s off", HeaderTimestamp, now.Sub(ts).Abs())
	}
	want, err := Sign(secret, h.Get(HeaderID), ts, body)
	if err != nil {
		return err
	}
	for _, s := range strings.Fields(h.Get(HeaderSignature)) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return errors.New("webhook: no signature matches")
}

// Backoff is an exponential schedule: First, doubling, at most Max, for
// at most Attempts tries in all.
type Backoff struct {
	First    time.Duration
	Max      time.Duration
	Attempts int
}

// After is the wait before try n+1, after n (1-based) tries.
func (b Backoff) After(n int) time.Duration {
	d := b.First
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// ParseURL checks the shape every webhook URL must have: at most 2048
// characters, absolute, http or https, a host, no user name or password.
// Which schemes and addresses are then allowed is the caller's policy.
func ParseURL(raw string) (*url.URL, error) {
	if len(raw) > 2048 {
		return nil, errors.New("at most 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, errors.New("must be an absolute https:// URL")
	}
	if u.User != nil {
		return nil, errors.New("must not carry a user name or password")
	}
	return u, nil
}

// Control is a net.Dialer Control function; plain says the request is
// plain http.
type Control func(plain bool) func(network, address string, c syscall.RawConn) error

// NewClient returns an HTTP client for webhooks: timeout per attempt, no
// proxy (which would connect for it, unchecked), no redirects followed (a
// 3xx is a failed attempt), and control (nil: none) checking every address
// it connects to.
func NewClient(timeout time.Duration, control Control) *http.Client {
	transport := func(plain bool) *http.Transport {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		if control != nil {
			d.Control = control(plain)
		}
		return &http.Transport{Proxy: nil, DialContext: d.DialContext, ForceAttemptHTTP2: true,
			TLSHandshakeTimeout: 10 * time.Second, MaxIdleConns: 16, IdleConnTimeout: 90 * time.Second}
	}
	secure, plain := transport(false), transport(true)
	return &http.Client{
		Timeout: timeout,
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Scheme == "http" {
				return plain.RoundTrip(r)
			}
			return secure.RoundTrip(r)
		}),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Post makes one signed delivery attempt: body POSTed to target as JSON
// with the message id and the attempt's time at, signed with secret. It
// returns the receiver's status (any; 2xx is success), or an error when
// none came. The error never holds the URL (which may carry a token), nor
// the secret.
func Post(ctx context.Context, client *http.Client, target, secret, id string, at time.Time, body []byte) (int, error) {
	sig, err := Sign(secret, id, at, body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("webhook: bad URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tollgate-webhooks")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	req.Header.Set(HeaderSignature, sig)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}
