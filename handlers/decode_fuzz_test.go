package handlers

import (
	"encoding/json"
	"net/http"
	"testing"
	"tollgate"
)

// FuzzDecodeGenerate: decodeBytes never panics, refuses with a 400 that
// says something, and accepts only a single valid JSON document.
func FuzzDecodeGenerate(f *testing.F) {
	for _, seed := range []string{
		`{"model":"chat","prompt":"hi"}`,
		`{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true,"options":{"temperature":0,"stop":["\n"]},"format":{"type":"object"},"keep_alive":"5m"}`,
		`{"prompt":5}`, `{"messages":[5]}`, `{"messages":[{"role":5}]}`, `{"options":[]}`, `{"stream":"yes"}`,
		`{"promt":"hi"}`, `{"prompt":"hi"}}`, `{"prompt":"hi"}]`, `{} {}`, `{} x`, `{`, `}`, `[]`, `null`, `"x"`, `5`, ``, ` `,
		"{\"prompt\":\"\xff\"}", `{"prompt":"\ud800"}`, `{"PROMPT":"hi"}`, `{"prompt":null,"prompt":"hi"}`, "\ufeff{}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req generateRequest
		err := decodeBytes(body, &req)
		if err == nil {
			if !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			return
		}
		ae, ok := err.(*tollgate.Error)
		if !ok {
			t.Fatalf("error %T %v, want *tollgate.Error", err, err)
		}
		if ae.Code.Status() != http.StatusBadRequest || ae.Code != tollgate.CodeInvalidRequest || ae.Message == "" {
			t.Fatalf("error %+v, want a 400 invalid_request with a message", ae)
		}
	})
}
