package inference

import (
	"strings"

	"github.com/ollama/ollama/types/model"
)

// Health is what Ping found about the catalog's models on the backends that
// answered.
type Health struct {
	// Serving lists, by public name, the models whose Ollama model is
	// installed on their backend: those that can answer requests.
	Serving []string
	// Missing lists, by public name, the models whose Ollama model is not
	// installed on their backend: every request for them fails with
	// model_not_installed until it is pulled.
	Missing []MissingModel
	// Unserved lists, by public name, the models none of whose backends
	// answered.
	Unserved []string
	// Down lists the backends that did not answer, with why.
	Down []DownBackend
}

// DownBackend is a backend that did not answer Ping.
type DownBackend struct {
	Backend Backend
	Err     error
}

// Pulls returns the commands that install the missing models, once each.
func (h Health) Pulls() []string {
	var out []string
	for _, m := range h.Missing {
		if p := m.Pull(); !contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// MissingModel is a catalog model its backend does not have.
type MissingModel struct {
	Name    string  // the public name
	Ollama  string  // the model the catalog maps it to
	Backend Backend // where it should be
}

// defaultOllama is the address the ollama command talks to when
// OLLAMA_HOST is not set.
const defaultOllama = "http://127.0.0.1:11434"

// Pull returns the command that installs m: "ollama pull NAME", with
// OLLAMA_HOST set when the backend is not Ollama's default local address.
func (m MissingModel) Pull() string {
	if u := m.Backend.URL; u != defaultOllama && u != "http://localhost:11434" {
		return "OLLAMA_HOST=" + u + " ollama pull " + m.Ollama
	}
	return "ollama pull " + m.Ollama
}

// hasModel reports whether name is among installed as Ollama resolves
// names: case-insensitively, with the defaults filled in, so "llama3.2"
// is "registry.ollama.ai/library/llama3.2:latest", the same as
// "llama3.2:latest" in /api/tags.
func hasModel(installed []string, name string) bool {
	want := model.ParseName(name)
	if !want.IsValid() {
		// Not a name Ollama would accept; compare it as written.
		for _, have := range installed {
			if strings.EqualFold(have, name) {
				return true
			}
		}
		return false
	}
	for _, have := range installed {
		if model.ParseName(have).EqualFold(want) {
			return true
		}
	}
	return false
}
