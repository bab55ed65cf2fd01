package handlers_test

// Safety net for authorization on the metered endpoints: a key without an
// endpoint's scope gets 403 insufficient_scope, and a key restricted to
// other models gets 403 model_not_allowed, on /generate, /embed and
// /predict alike, and neither reaches Ollama.

import (
	"net/http"
	"slices"
	"testing"

	"tollgate/auth"
)

var meteredEndpoints = []struct {
	scope      auth.Scope
	path, body string
	model      string // the public model the body asks for
}{
	{auth.ScopeGenerate, "/generate", generateBody, "chat"},
	{auth.ScopeEmbed, "/embed", embedBody, "embedder"},
	{auth.ScopePredict, "/predict", predictBody, "chat"}, // the sentiment task's model
}

func TestSafetyNetScopeRequired(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	for _, ep := range meteredEndpoints {
		t.Run(string(ep.scope), func(t *testing.T) {
			others := slices.DeleteFunc(auth.AllScopes(), func(s auth.Scope) bool { return s == ep.scope })
			_, secret := ts.newKey(t, auth.Spec{Scopes: others})
			before := fake.Stats().Requests
			ts.doError(t, "POST", ep.path, ep.body, http.StatusForbidden, "insufficient_scope", []string{string(ep.scope)}, "X-API-Key", secret)
			if n := fake.Stats().Requests - before; n != 0 {
				t.Errorf("Ollama got %d request(s) for a key without the %s scope", n, ep.scope)
			}
		})
	}
}

func TestSafetyNetModelAllowed(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	_, secret := ts.newKey(t, auth.Spec{Models: []string{"some-other-model"}})
	for _, ep := range meteredEndpoints {
		t.Run(string(ep.scope), func(t *testing.T) {
			before := fake.Stats().Requests
			ts.doError(t, "POST", ep.path, ep.body, http.StatusForbidden, "model_not_allowed", []string{ep.model}, "X-API-Key", secret)
			if n := fake.Stats().Requests - before; n != 0 {
				t.Errorf("Ollama got %d request(s) for a model the key may not use", n)
			}
		})
	}
}
