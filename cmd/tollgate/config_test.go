package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// OLLAMA_AUTH is read through run's getenv, not the process environment:
// set there, requests are signed with ~/.ollama/id_ed25519, and with no key
// (HOME is an empty folder) check-config says why it cannot reach Ollama.
func TestCheckConfigOllamaAuthFromGetenv(t *testing.T) {
	t.Setenv("OLLAMA_AUTH", "")
	t.Setenv("HOME", t.TempDir())
	fake := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	defer fake.Close()
	cat := writeFile(t, "m.yaml", tinyCatalog(fake.URL, "tiny"))
	for _, tc := range []struct {
		value string
		sign  bool
	}{{"", false}, {"0", false}, {"false", false}, {"1", true}, {"true", true}, {` "yes" `, true}} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"check-config", "--models", cat}, env("OLLAMA_AUTH", tc.value), time.Now, &out, &out)
		if tc.sign {
			if err == nil || !strings.Contains(err.Error(), "OLLAMA_AUTH") {
				t.Errorf("OLLAMA_AUTH=%q: %v, want a failure to sign naming OLLAMA_AUTH\n%s", tc.value, err, out.String())
			}
		} else if err != nil {
			t.Errorf("OLLAMA_AUTH=%q: %v\n%s", tc.value, err, out.String())
		}
	}
}
