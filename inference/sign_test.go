package inference

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"tollgate/inference/ollamatest"
)

// Signing is the caller's decision (WithAuth), never the process
// environment's: with OLLAMA_AUTH set in the environment and no key to sign
// with, an unsigned client still generates and chats.
func TestProcessEnvironmentDoesNotSign(t *testing.T) {
	t.Setenv("OLLAMA_AUTH", "1")
	t.Setenv("HOME", t.TempDir()) // no ~/.ollama/id_ed25519
	srv, c, tiny, _ := fake(t, "")
	ctx := testContext(t)
	if _, err := c.Generate(ctx, tiny, GenerateRequest{Prompt: "hi"}, nil); err != nil {
		t.Fatalf("Generate with OLLAMA_AUTH in the environment but not asked for: %v", err)
	}
	if _, err := c.Generate(ctx, tiny, GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}}, nil); err != nil {
		t.Fatalf("chat with OLLAMA_AUTH in the environment but not asked for: %v", err)
	}
	for _, r := range srv.Requests() {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("%s %s was signed (%q)", r.Method, r.Path, a)
		}
	}
}

// seen is a request as it reached Ollama, query included.
type seen struct {
	method, path, query, auth string
}

// signingProxy starts a reverse proxy to srv that notes every request.
func signingProxy(t *testing.T, srv *ollamatest.Server) (string, func() []seen) {
	t.Helper()
	target, _ := url.Parse(srv.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	var got []seen
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization")})
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ps.Close)
	return ps.URL, func() []seen { mu.Lock(); defer mu.Unlock(); return append([]seen(nil), got...) }
}

// writeOllamaKey writes an Ollama identity to $HOME/.ollama/id_ed25519 (HOME
// set to a fresh folder) and returns its public key.
func writeOllamaKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, ".ollama"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ollama", "id_ed25519"), pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey()
}

// WithAuth(true) signs every request, the pooled streaming path as well as
// api.Client's, as Ollama's client does under OLLAMA_AUTH, with OLLAMA_AUTH
// absent from the environment.
func TestWithAuthSignsEveryRequest(t *testing.T) {
	t.Setenv("OLLAMA_AUTH", "")
	pub := writeOllamaKey(t)
	srv := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(srv.Close)
	proxy, requests := signingProxy(t, srv)
	c := NewClient(testCatalog(t, proxy, "", "tiny"), WithAuth(true))
	ctx := testContext(t)
	cat := c.Catalog()
	if _, err := c.Generate(ctx, cat.Models["tiny"], GenerateRequest{Prompt: "hi"}, nil); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if _, err := c.Generate(ctx, cat.Models["tiny"], GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}}, nil); err != nil {
		t.Fatalf("chat: %v", err)
	}
	if _, err := c.Embed(ctx, cat.Models["embedder"], []string{"hi"}, nil); err != nil {
		t.Fatalf("Embed: %v", err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	paths := map[string]bool{}
	for _, r := range requests() {
		paths[r.path] = true
		q, _ := url.ParseQuery(r.query)
		ts := q.Get("ts")
		pubB64, sigB64, ok := strings.Cut(r.auth, ":")
		if ts == "" || !ok {
			t.Errorf("%s %s?%s: Authorization %q, want ts and <pubkey>:<signature>", r.method, r.path, r.query, r.auth)
			continue
		}
		if want := base64.StdEncoding.EncodeToString(pub.Marshal()); pubB64 != want {
			t.Errorf("%s %s: signed by %s, want %s", r.method, r.path, pubB64, want)
		}
		sig, _ := base64.StdEncoding.DecodeString(sigB64)
		challenge := r.method + "," + r.path + "?ts=" + ts
		if err := pub.Verify([]byte(challenge), &ssh.Signature{Format: ssh.KeyAlgoED25519, Blob: sig}); err != nil {
			t.Errorf("%s %s: the signature does not verify over %q: %v", r.method, r.path, challenge, err)
		}
	}
	for _, p := range []string{"/api/generate", "/api/chat", "/api/embed", "/api/tags"} {
		if !paths[p] {
			t.Errorf("no request to %s went through (saw %v)", p, paths)
		}
	}
}

// WithAuth(true) without a key to sign with fails with the reason, not as
// a broken connection to Ollama.
func TestWithAuthWithoutKey(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	srv := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(srv.Close)
	c := NewClient(testCatalog(t, srv.URL, "", "tiny"), WithAuth(true))
	_, err := c.Generate(testContext(t), c.Catalog().Models["tiny"], GenerateRequest{Prompt: "hi"}, nil)
	var se *SignError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "OLLAMA_AUTH") {
		t.Errorf("Generate without a key: %v (%T), want a *SignError naming OLLAMA_AUTH", err, err)
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("%d requests reached Ollama unsigned", n)
	}
}
