package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
	"tollgate/internal/realollama"
)

// check-config lists the catalog models Ollama does not have, with the
// ollama pull for each, and fails (exit 1): serving them would answer every
// request with model_not_installed.
func TestCheckConfigMissingModels(t *testing.T) {
	fake := ollamatest.NewServer(ollamatest.WithModels("llama3.2:latest"))
	defer fake.Close()
	cat := writeFile(t, "m.yaml", fmt.Sprintf(`backends:
  - url: %s
models:
  chat:     {ollama: llama3.2, endpoints: [generate]}
  embedder: {ollama: nomic-embed-text, endpoints: [embed]}
  small:    {ollama: qwen2:0.5b, endpoints: [generate]}
`, fake.URL))
	var out bytes.Buffer
	err := run(context.Background(), []string{"check-config", "--models", cat}, env(), time.Now, &out, &out)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("check-config with models missing: %v (exit %d), want exit 1\n%s", err, exitCode(err), out.String())
	}
	for _, want := range []string{
		fake.URL + ": reachable",
		"model embedder: nomic-embed-text is not installed",
		"model small: qwen2:0.5b is not installed",
		"OLLAMA_HOST=" + fake.URL + " ollama pull nomic-embed-text",
		"OLLAMA_HOST=" + fake.URL + " ollama pull qwen2:0.5b",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not say %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "model chat:") {
		t.Errorf("chat (llama3.2 = llama3.2:latest, installed) reported missing:\n%s", out.String())
	}
	if !strings.Contains(err.Error(), "2 of 3 catalog models are not installed") {
		t.Errorf("error %q", err)
	}
}

// The same against a real Ollama: its test model is there, a model never
// pulled is not.
func TestCheckConfigRealOllama(t *testing.T) {
	url, model := realollama.Require(t)
	var out bytes.Buffer
	ok := writeFile(t, "ok.yaml", tinyCatalog(url, model))
	if err := run(context.Background(), []string{"check-config", "--models", ok}, env(), time.Now, &out, &out); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out.String())
	}
	out.Reset()
	ghost := writeFile(t, "ghost.yaml", tinyCatalog(url, "tollgate-never-pulled:7b"))
	err := run(context.Background(), []string{"check-config", "--models", ghost}, env(), time.Now, &out, &out)
	if err == nil || !strings.Contains(out.String(), "ollama pull tollgate-never-pulled:7b") {
		t.Fatalf("check-config with a model never pulled: %v\n%s", err, out.String())
	}
}

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

// check-config names each backend that does not answer and fails, even
// when another one serves every model.
func TestCheckConfigBackendDown(t *testing.T) {
	fake := ollamatest.NewServer(ollamatest.WithModels("llama3.2:latest"))
	defer fake.Close()
	refused := ollamatest.RefusedURL(t)
	cat := writeFile(t, "m.yaml", fmt.Sprintf(`backends:
  - {name: gpu0, url: %s}
  - {name: gpu1, url: %s}
models:
  chat: {ollama: llama3.2, endpoints: [generate]}
`, fake.URL, refused))
	var out bytes.Buffer
	err := run(context.Background(), []string{"check-config", "--models", cat}, env(), time.Now, &out, &out)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "Ollama at "+refused+" is not reachable") {
		t.Fatalf("check-config with a backend down: %v (exit %d), want exit 1 naming it\n%s", err, exitCode(err), out.String())
	}
	for _, want := range []string{"ollama gpu0 at " + fake.URL + ": reachable", "ollama gpu1 at " + refused + ": Ollama at " + refused + " is not reachable"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not say %q:\n%s", want, out.String())
		}
	}
}
