package handlers_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadRequests: every request the handlers refuse before calling Ollama,
// with the field at fault named in the message.
func TestBadRequests(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	msgs := func(m ...string) []string { return m }
	for _, tc := range []struct {
		name, path string
		body       any // see testServer.send
		hdr        []string
		status     int
		code       string
		msgs       []string
	}{
		{"truncated JSON", "/generate", `{"model":"chat","prompt":"hi"`, nil, 400, "invalid_request", msgs("truncated JSON")},
		{"syntax error", "/generate", `{"model":"chat",,}`, nil, 400, "invalid_request", msgs("not valid JSON", "at byte")},
		{"not JSON, text/plain", "/generate", `model=chat&prompt=hi`, []string{"Content-Type", "text/plain"}, 400, "invalid_request",
			msgs("not valid JSON", "Content-Type: application/json", "form fields with Content-Type: application/x-www-form-urlencoded")},
		{"empty body", "/generate", ``, nil, 400, "invalid_request", msgs("empty")},
		{"not an object", "/generate", `["chat"]`, nil, 400, "invalid_request", msgs("must be a JSON object")},
		{"two objects", "/generate", `{"model":"chat","prompt":"hi"} {}`, nil, 400, "invalid_request", msgs("single JSON object")},
		{"trailing brace", "/generate", `{"model":"chat","prompt":"hi"}}`, nil, 400, "invalid_request", msgs("single JSON object")},
		{"prompt of the wrong type", "/generate", `{"model":"chat","prompt":5}`, nil, 400, "invalid_request", msgs(`"prompt"`, "string")},
		{"stream of the wrong type", "/generate", `{"model":"chat","prompt":"hi","stream":"yes"}`, nil, 400, "invalid_request", msgs(`"stream"`, "true or false")},
		{"unknown field", "/generate", `{"model":"chat","promt":"hi"}`, nil, 400, "invalid_request", msgs(`unknown field "promt"`)},
		{"prompt and messages", "/generate", `{"model":"chat","prompt":"hi","messages":[{"role":"user","content":"hi"}]}`, nil, 400, "invalid_request", msgs("not both")},
		{"neither prompt nor messages", "/generate", `{"model":"chat"}`, nil, 400, "invalid_request", msgs(`"prompt"`, `"messages"`, "required")},
		{"blank prompt", "/generate", `{"model":"chat","prompt":"  "}`, nil, 400, "invalid_request", msgs(`"prompt"`, "empty")},
		{"empty messages", "/generate", `{"model":"chat","messages":[]}`, nil, 400, "invalid_request", msgs(`"messages"`, "empty")},
		{"bad role", "/generate", `{"model":"chat","messages":[{"role":"wizard","content":"hi"}]}`, nil, 400, "invalid_request", msgs("messages[0].role")},
		{"operator option", "/generate", `{"model":"chat","prompt":"hi","options":{"num_gpu":99}}`, nil, 400, "invalid_request", msgs("options.num_gpu")},
		{"option of the wrong type", "/generate", `{"model":"chat","prompt":"hi","options":{"temperature":"hot"}}`, nil, 400, "invalid_request", msgs("options.temperature", "number")},
		{"option out of range", "/generate", `{"model":"chat","prompt":"hi","options":{"top_p":2}}`, nil, 400, "invalid_request", msgs("options.top_p")},
		{"negative keep_alive", "/generate", `{"model":"chat","prompt":"hi","keep_alive":-1}`, nil, 400, "invalid_request", msgs("keep_alive", "negative")},
		{"bad format", "/generate", `{"model":"chat","prompt":"hi","format":"yaml"}`, nil, 400, "invalid_request", msgs("format")},
		{"unknown model", "/generate", `{"model":"gpt-5","prompt":"hi"}`, nil, 404, "model_not_found", msgs(`"gpt-5"`, "GET /models")},
		{"model not serving generate", "/generate", `{"model":"embedder","prompt":"hi"}`, nil, 400, "invalid_request", msgs("model", `"embedder"`, "/generate")},
		{"model not serving embed", "/embed", `{"model":"chat","input":"hi"}`, nil, 400, "invalid_request", msgs(`"chat"`, "/embed")},
		{"embed empty string", "/embed", `{"model":"embedder","input":""}`, nil, 400, "invalid_request", msgs(`"input"`, "empty")},
		{"embed empty array", "/embed", `{"model":"embedder","input":[]}`, nil, 400, "invalid_request", msgs(`"input"`, "required")},
		{"embed array of an empty string", "/embed", `{"model":"embedder","input":[""]}`, nil, 400, "invalid_request", msgs(`"input[0]"`, "empty")},
		{"embed array with empty string", "/embed", `{"model":"embedder","input":["a",""]}`, nil, 400, "invalid_request", msgs(`"input[1]"`, "empty")},
		{"embed no input", "/embed", `{"model":"embedder"}`, nil, 400, "invalid_request", msgs(`"input"`, "required")},
		{"embed input of the wrong type", "/embed", `{"model":"embedder","input":5}`, nil, 400, "invalid_request", msgs(`"input"`, "string or an array")},
		{"embed too many inputs", "/embed", `{"model":"embedder","input":["a","b","c","d"]}`, nil, 400, "invalid_request", msgs(`"input"`, "4 items", "limit", "3")},
		{"unknown task", "/predict", `{"task":"astrology","input":"hi"}`, nil, 404, "task_not_found", msgs(`"astrology"`)},
		{"task and labels", "/predict", `{"task":"sentiment","labels":["a","b"],"input":"hi"}`, nil, 400, "invalid_request", msgs("not both")},
		{"neither task nor labels", "/predict", `{"input":"hi"}`, nil, 400, "invalid_request", msgs(`"task"`, `"labels"`)},
		{"duplicate labels", "/predict", `{"labels":["a","a"],"input":"hi"}`, nil, 400, "invalid_request", msgs("labels[1]")},
		{"predict too many inputs", "/predict", `{"task":"sentiment","input":["a","b","c","d"]}`, nil, 400, "invalid_request", msgs(`"input"`, "limit")},
		{"predict empty input", "/predict", `{"task":"sentiment","input":""}`, nil, 400, "invalid_request", msgs(`"input"`, "empty")},
		{"predict with an embedding model", "/predict", `{"labels":["a","b"],"model":"embedder","input":"hi"}`, nil, 400, "invalid_request", msgs(`"embedder"`, "/predict")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.doError(t, "POST", tc.path, tc.body, tc.status, tc.code, tc.msgs, tc.hdr...)
		})
	}
	if n := fake.Stats().Requests; n != 0 {
		t.Errorf("the fake Ollama got %d requests for requests that should have been refused", n)
	}
}

// TestUpstreamLimits: the GPU-costly knobs are always set upstream and
// clamped to the model's limits (max_num_predict 64, max_keep_alive 10m).
func TestUpstreamLimits(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	for _, tc := range []struct {
		name       string
		path, body string
		numPredict int
		keepAlive  string // "" = not sent
	}{
		{"defaults", "/generate", `{"model":"chat","prompt":"hi"}`, 64, ""},
		{"below the limit", "/generate", `{"model":"chat","prompt":"hi","options":{"num_predict":10}}`, 10, ""},
		{"above the limit", "/generate", `{"model":"chat","prompt":"hi","options":{"num_predict":100000}}`, 64, ""},
		{"infinite", "/generate", `{"model":"chat","prompt":"hi","options":{"num_predict":-1}}`, 64, ""},
		{"fill the context", "/generate", `{"model":"chat","prompt":"hi","options":{"num_predict":-2}}`, 64, ""},
		{"chat, streamed", "/generate", `{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true,"options":{"num_predict":1000}}`, 64, ""},
		{"keep_alive below the limit", "/generate", `{"model":"chat","prompt":"hi","keep_alive":"5m"}`, 64, "5m0s"},
		{"keep_alive above the limit", "/generate", `{"model":"chat","prompt":"hi","keep_alive":"24h"}`, 64, "10m0s"},
		{"keep_alive in seconds", "/generate", `{"model":"chat","prompt":"hi","keep_alive":3600}`, 64, "10m0s"},
		{"unload", "/generate", `{"model":"chat","prompt":"hi","keep_alive":0}`, 64, "0s"},
		{"embed", "/embed", `{"model":"embedder","input":"a","keep_alive":"2h"}`, -1, "30m0s"}, // nothing to generate; the catalog's default keep_alive
		{"predict default", "/predict", `{"task":"sentiment","input":"hi"}`, 32 + 2*len("positive"), ""},
		{"predict above the limit", "/predict", `{"task":"sentiment","input":"hi","options":{"num_predict":5000},"keep_alive":"1h"}`, 64, "10m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := ts.do(t, "POST", tc.path, tc.body)
			if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			req := lastRequest(t, fake)
			if n, ok := req.NumPredict(); tc.numPredict < 0 && ok {
				t.Errorf("num_predict sent to Ollama for an embedding: %d", n)
			} else if tc.numPredict >= 0 && (!ok || n != tc.numPredict) {
				t.Errorf("num_predict sent to Ollama: %d (set %v), want %d", n, ok, tc.numPredict)
			}
			keep := ""
			if req.KeepAlive != nil {
				keep = req.KeepAlive.Duration.String()
			}
			if keep != tc.keepAlive {
				t.Errorf("keep_alive sent to Ollama: %q, want %q", keep, tc.keepAlive)
			}
		})
	}
}

// TestFakeShapes checks the three endpoints' shapes against the fake, which
// maps public names to Ollama's and never lets the latter out.
func TestFakeShapes(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")

	var gen generateResponse
	ts.doJSON(t, "POST", "/generate", `{"model":"chat","prompt":"say hello"}`, http.StatusOK, &gen)
	if gen.Text != "Hello, world" || gen.Model != "chat" || gen.DoneReason != "stop" {
		t.Errorf("generate: %+v", gen)
	}
	gen.Usage.check(t, 2, 3) // the fake counts prompt words and chunks
	if req := lastRequest(t, fake); req.Model != "llama3.2:3b" || req.Path != "/api/generate" || req.Prompt != "say hello" {
		t.Errorf("sent to Ollama: %s model %q prompt %q", req.Path, req.Model, req.Prompt)
	}

	var pred struct {
		Predictions []struct{ Label string }
	}
	ts.doJSON(t, "POST", "/predict", `{"task":"sentiment","input":["good","bad"]}`, http.StatusOK, &pred)
	if len(pred.Predictions) != 2 || pred.Predictions[0].Label != "positive" {
		t.Errorf("predict: %+v", pred)
	}

	resp := ts.do(t, "GET", "/models", nil)
	body := string(readAll(t, resp))
	for _, secret := range []string{"llama3.2:3b", "nomic-embed-text", fake.URL} {
		if strings.Contains(body, secret) {
			t.Errorf("GET /models reveals %q: %s", secret, body)
		}
	}
	for _, want := range []string{`"name":"chat"`, `"input_per_1k":"0.000200"`, `"output_per_1k":"0.000600"`, `"max_output_tokens":64`, `"max_inputs":3`, `"name":"sentiment"`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /models lacks %s: %s", want, body)
		}
	}
}
