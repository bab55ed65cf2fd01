// Package realollama connects integration tests to a real Ollama server.
//
// scripts/test.sh (through scripts/ollama-test-server.sh) runs Ollama v0.10.1
// serving a tiny test model (see package tinymodel) and exports its address
// and model name. Tests call [Require] to get them:
//
//	func TestChatAgainstOllama(t *testing.T) {
//		url, model := realollama.Require(t)
//		...
//	}
//
// When the variables are not set, Require skips the test loudly, or fails it
// when TOLLGATE_REQUIRE_OLLAMA=1 (scripts/test.sh and CI set this, so a broken
// harness can never turn integration tests into silent skips).
package realollama

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables read by [Require].
const (
	// EnvURL is the base URL of the Ollama server, e.g. http://127.0.0.1:41234.
	EnvURL = "TOLLGATE_TEST_OLLAMA_URL"
	// EnvModel is the name of a model that server serves, e.g. "tiny".
	EnvModel = "TOLLGATE_TEST_OLLAMA_MODEL"
	// EnvRequire, when "1", makes a missing or unreachable server a test
	// failure instead of a skip.
	EnvRequire = "TOLLGATE_REQUIRE_OLLAMA"
)

// Require returns the base URL (without a trailing slash) and model name of
// the real Ollama server configured by [EnvURL] and [EnvModel].
//
// If either is unset, Require calls t.Fatal when [EnvRequire] is "1" and
// t.Skip otherwise, both with a message that says how to run the test. If they
// are set but the server does not answer GET /api/version, Require calls
// t.Fatal. The reachability check is done once per test binary.
func Require(t testing.TB) (url, model string) {
	t.Helper()
	url = strings.TrimRight(os.Getenv(EnvURL), "/")
	model = os.Getenv(EnvModel)
	if url == "" || model == "" {
		var missing []string
		if url == "" {
			missing = append(missing, EnvURL)
		}
		if model == "" {
			missing = append(missing, EnvModel)
		}
		unset := strings.Join(missing, " and ") + " not set"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("REAL OLLAMA REQUIRED (%s=1) BUT NOT CONFIGURED: %s; run scripts/test.sh, "+
				"or scripts/ollama-test-server.sh start && source .ollama-test/env", EnvRequire, unset)
		}
		t.Skipf("REAL OLLAMA NOT AVAILABLE: integration test skipped; run scripts/test.sh (%s)", unset)
	}
	if err := ping(url); err != nil {
		t.Fatalf("REAL OLLAMA NOT REACHABLE: %s=%s is set but %v; restart it with scripts/ollama-test-server.sh start "+
			"(log: .ollama-test/serve.log)", EnvURL, url, err)
	}
	return url, model
}

var (
	pingMu   sync.Mutex
	pingDone = map[string]error{}
)

// ping checks once per URL that the server answers GET /api/version.
func ping(url string) error {
	pingMu.Lock()
	defer pingMu.Unlock()
	if err, ok := pingDone[url]; ok {
		return err
	}
	err := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/version", nil)
		if err != nil {
			return fmt.Errorf("it is not a valid URL: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("the server does not answer: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /api/version answered %s", resp.Status)
		}
		return nil
	}()
	pingDone[url] = err
	return err
}
