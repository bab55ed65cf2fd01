package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// selfSigned writes a fresh self-signed ECDSA certificate for 127.0.0.1 and
// its key as PEM files in a temporary directory, and returns their paths
// and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "tollgate test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// tlsClient trusts only pool and offers HTTP/2, as most clients do.
func tlsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
}

func TestServeTLS(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	certFile, keyFile, pool := selfSigned(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	r := startServe(t, env(), "--models", cat, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(r.url, "https://") || !strings.Contains(r.out.String(), `"scheme":"https"`) {
		t.Fatalf("listening line does not say https (url %q):\n%s", r.url, r.out.String())
	}
	client := tlsClient(pool)

	t.Run("healthz over HTTPS", func(t *testing.T) {
		resp, err := client.Get(r.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil {
			t.Fatalf("GET /healthz = %d %s (TLS %v)", resp.StatusCode, body, resp.TLS != nil)
		}
		if resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 2 {
			t.Errorf("negotiated TLS %x over %s; want TLS 1.2+ and HTTP/2", resp.TLS.Version, resp.Proto)
		}
	})

	t.Run("a stream arrives over HTTP/2", func(t *testing.T) {
		key := createKey(t, r.db, "--name", "tls")
		req, _ := http.NewRequest("POST", r.url+"/generate", strings.NewReader(`{"prompt":"hi","stream":true}`))
		req.Header.Set("X-API-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
			!strings.Contains(string(body), `"done":true`) {
			t.Fatalf("streamed POST /generate over %s = %d %q\n%s", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})

	t.Run("plain HTTP to the same port is refused", func(t *testing.T) {
		plain := "http://" + strings.TrimPrefix(r.url, "https://")
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(plain + "/healthz")
		if err != nil {
			return // refused outright: fine
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Go's server answers a plain request on a TLS port with a bare 400.
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), `"ok"`) {
			t.Fatalf("plain HTTP GET /healthz on the HTTPS port = %d %s", resp.StatusCode, body)
		}
	})

	t.Run("TLS below 1.2 is refused", func(t *testing.T) {
		old := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
		}}}
		if resp, err := old.Get(r.url + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatalf("a TLS 1.1 client was served (%s)", resp.Status)
		}
	})

	t.Run("a client that does not trust the certificate fails", func(t *testing.T) {
		if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(r.url + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatal("the system roots accepted a self-signed test certificate")
		}
	})
}

func TestServeTLSFromEnvironment(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	certFile, keyFile, pool := selfSigned(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	r := startServe(t, env("TOLLGATE_TLS_CERT", certFile, "TOLLGATE_TLS_KEY", keyFile), "--models", cat)
	resp, err := tlsClient(pool).Get(r.url + "/healthz")
	if err != nil {
		t.Fatalf("GET %s/healthz: %v", r.url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /healthz = %d", resp.StatusCode)
	}
}

func TestServeTLSStartupErrors(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	otherCert, _, _ := selfSigned(t)
	garbled := writeFile(t, "garbled.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
	missing := filepath.Join(t.TempDir(), "nope", "cert.pem")
	cases := []struct {
		name   string
		args   []string
		getenv func(string) string
		code   int
		want   []string
	}{
		{"cert without key", []string{"--tls-cert", certFile}, env(), 2, []string{"--tls-cert needs --tls-key"}},
		{"key without cert", []string{"--tls-key", keyFile}, env(), 2, []string{"--tls-key needs --tls-cert"}},
		{"cert from env, no key", nil, env("TOLLGATE_TLS_CERT", certFile), 2, []string{"--tls-cert needs --tls-key"}},
		{"missing cert file", []string{"--tls-cert", missing, "--tls-key", keyFile}, env(), 1, []string{missing, "no such file"}},
		{"missing key file", []string{"--tls-cert", certFile, "--tls-key", missing}, env(), 1, []string{missing, "no such file"}},
		{"garbled cert", []string{"--tls-cert", garbled, "--tls-key", keyFile}, env(), 1, []string{garbled, "PEM"}},
		{"key of another certificate", []string{"--tls-cert", otherCert, "--tls-key", keyFile}, env(), 1, []string{otherCert, keyFile, "does not match"}},
		{"cert given as key", []string{"--tls-cert", certFile, "--tls-key", certFile}, env(), 1, []string{certFile, "key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "t.db")
			var out bytes.Buffer
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, args, tc.getenv, time.Now, &out, &out)
			if err == nil {
				t.Fatalf("serve %q returned nil; output:\n%s", tc.args, out.String())
			}
			if got := exitCode(err); got != tc.code {
				t.Errorf("exit code %d, want %d (err %v)", got, tc.code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(out.String(), "tollgate listening") {
				t.Errorf("serve listened despite the TLS error:\n%s", out.String())
			}
			if _, statErr := os.Stat(db); statErr == nil {
				t.Errorf("the database was created before the TLS files were checked")
			}
		})
	}
}
