package handlers_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// formField is one form field, in the order sent (url.Values would sort
// them and lose the order of repeated fields across names).
type formField struct{ name, value string }

// urlEncoded encodes fields as application/x-www-form-urlencoded.
func urlEncoded(fields []formField) (body string, hdr []string) {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = url.QueryEscape(f.name) + "=" + url.QueryEscape(f.value)
	}
	return strings.Join(parts, "&"), []string{"Content-Type", "application/x-www-form-urlencoded"}
}

// multipartForm encodes fields as multipart/form-data, as Zapier's Form
// payload and Make's multipart body do.
func multipartForm(t testing.TB, fields []formField) (body string, hdr []string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		if err := w.WriteField(f.name, f.value); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String(), []string{"Content-Type", w.FormDataContentType()}
}

// bodyEncodings sends the same fields each way a no-code tool does.
var bodyEncodings = []struct {
	name   string
	encode func(testing.TB, []formField) (string, []string)
}{
	{"urlencoded", func(_ testing.TB, f []formField) (string, []string) { return urlEncoded(f) }},
	{"multipart", multipartForm},
}

// TestFormBodies: a form body (URL-encoded or multipart, as Zapier's Form
// payload and Make send) and a JSON body typing every value as a string (as
// Zapier's JSON payload does) reach Ollama with typed values on each native
// route.
func TestFormBodies(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")

	checkGenerate := func(t *testing.T, got ollamatest.Request) {
		t.Helper()
		if got.Prompt != "hi there" || got.System != "be brief" {
			t.Errorf("prompt %q, system %q", got.Prompt, got.System)
		}
		if n, ok := got.NumPredict(); !ok || n != 20 {
			t.Errorf("num_predict %v, want the number 20", got.Options["num_predict"])
		}
		if temp, ok := got.Options["temperature"].(float64); !ok || temp != 0.2 {
			t.Errorf("temperature %#v, want the number 0.2", got.Options["temperature"])
		}
		if got.KeepAlive == nil || got.KeepAlive.Duration != 300*time.Second {
			t.Errorf("keep_alive %v, want 300s", got.KeepAlive)
		}
	}
	generateFields := []formField{{"model", "chat"}, {"prompt", "hi there"}, {"system", "be brief"}, {"stream", "false"},
		{"temperature", "0.2"}, {"options.num_predict", "20"}, {"keep_alive", "300"}}
	for _, enc := range bodyEncodings {
		t.Run("generate "+enc.name, func(t *testing.T) {
			body, hdr := enc.encode(t, generateFields)
			var res struct{ Text string }
			ts.doJSON(t, "POST", "/generate", body, http.StatusOK, &res, hdr...) // JSON, not a stream: stream=false honoured
			if res.Text == "" {
				t.Error("no text")
			}
			checkGenerate(t, lastRequest(t, fake))
		})
	}
	t.Run("generate JSON with strings", func(t *testing.T) {
		body := `{"model":"chat","prompt":"hi there","system":"be brief","stream":"false",` +
			`"options":{"num_predict":"20","temperature":"0.2"},"keep_alive":"300"}`
		ts.doJSON(t, "POST", "/generate", body, http.StatusOK, nil)
		checkGenerate(t, lastRequest(t, fake))
	})
	t.Run("generate form stream=true streams", func(t *testing.T) {
		body, hdr := urlEncoded([]formField{{"model", "chat"}, {"prompt", "hi"}, {"stream", "true"}})
		resp := ts.do(t, "POST", "/generate", body, hdr...)
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("status %d, Content-Type %q: want a 200 event stream", resp.StatusCode, ct)
		}
		if gs := parseGenerateStream(t, readEvents(t, resp.Body)); gs.done == nil {
			t.Errorf("no done event: %+v", gs.events)
		}
	})
	t.Run("generate form messages and format", func(t *testing.T) {
		body, hdr := urlEncoded([]formField{{"model", "chat"}, {"messages", `[{"role":"user","content":"hi"}]`}, {"format", "json"}})
		ts.doJSON(t, "POST", "/generate", body, http.StatusOK, nil, hdr...)
		got := lastRequest(t, fake)
		if len(got.Messages) != 1 || got.Messages[0].Content != "hi" || string(got.Format) != `"json"` {
			t.Errorf("messages %+v, format %s", got.Messages, got.Format)
		}
	})

	for _, enc := range bodyEncodings {
		t.Run("embed "+enc.name, func(t *testing.T) {
			body, hdr := enc.encode(t, []formField{{"model", "embedder"}, {"input", "one"}, {"input", "two, three"}})
			var res struct{ Embeddings [][]float32 }
			ts.doJSON(t, "POST", "/embed", body, http.StatusOK, &res, hdr...)
			if got := lastRequest(t, fake).Input; !slices.Equal(got, []string{"one", "two, three"}) || len(res.Embeddings) != 2 {
				t.Errorf("Ollama got input %q, %d embeddings back; want the two repeated fields as a list", got, len(res.Embeddings))
			}
			// One field is one input, commas and all.
			body, hdr = enc.encode(t, []formField{{"model", "embedder"}, {"input", "one, two"}})
			ts.doJSON(t, "POST", "/embed", body, http.StatusOK, &res, hdr...)
			if got := lastRequest(t, fake).Input; !slices.Equal(got, []string{"one, two"}) || len(res.Embeddings) != 1 {
				t.Errorf("Ollama got input %q, %d embeddings back; want one input", got, len(res.Embeddings))
			}
		})
	}

	checkPredict := func(t *testing.T, got ollamatest.Request) {
		t.Helper()
		if !strings.Contains(string(got.Format), `"bug"`) || !strings.Contains(string(got.Format), `"feature"`) {
			t.Errorf("format %s, want the labels bug and feature", got.Format)
		}
		if temp, ok := got.Options["temperature"].(float64); !ok || temp != 0.2 {
			t.Errorf("temperature %#v, want the number 0.2", got.Options["temperature"])
		}
	}
	for _, enc := range bodyEncodings {
		for _, labels := range [][]formField{{{"labels", "bug, feature"}}, {{"labels", "bug"}, {"labels", "feature"}}} {
			t.Run("predict "+enc.name, func(t *testing.T) {
				fields := append([]formField{{"model", "chat"}, {"input", "it crashes"}, {"options.temperature", "0.2"}}, labels...)
				body, hdr := enc.encode(t, fields)
				var res struct{ Label string }
				ts.doJSON(t, "POST", "/predict", body, http.StatusOK, &res, hdr...)
				if res.Label != "bug" && res.Label != "feature" {
					t.Errorf("label %q", res.Label)
				}
				checkPredict(t, lastRequest(t, fake))
			})
		}
	}
	t.Run("predict JSON with strings", func(t *testing.T) {
		ts.doJSON(t, "POST", "/predict", `{"labels":"bug,feature","input":"it crashes","options":{"temperature":"0.2"}}`, http.StatusOK, nil)
		checkPredict(t, lastRequest(t, fake))
	})
	t.Run("curl -d JSON keeps working", func(t *testing.T) {
		ts.doJSON(t, "POST", "/generate", `{"model":"chat","prompt":"hi"}`, http.StatusOK, nil, "Content-Type", "application/x-www-form-urlencoded")
	})
}

// TestFormErrors: what a no-code user sees for each mistake, the field at
// fault named; none reaches Ollama.
func TestFormErrors(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	msgs := func(m ...string) []string { return m }
	form := func(s string) []formField {
		var out []formField
		for kv := range strings.SplitSeq(s, "&") {
			k, v, _ := strings.Cut(kv, "=")
			out = append(out, formField{k, v})
		}
		return out
	}
	for _, tc := range []struct {
		name, path, fields string
		msgs               []string
	}{
		{"typo", "/generate", "model=chat&promt=hi",
			msgs(`unknown field "promt"`, "form fields use the JSON names: model, prompt, system, messages, stream, options.temperature or temperature")},
		{"typo in embed", "/embed", "model=embedder&inptu=hi", msgs(`unknown field "inptu"`, "model, input, keep_alive")},
		{"option on embed", "/embed", "model=embedder&input=hi&temperature=0.2", msgs(`unknown field "temperature"`)},
		{"operator option", "/generate", "model=chat&prompt=hi&num_gpu=9", msgs(`unknown field "num_gpu"`)},
		{"operator option, dotted", "/generate", "model=chat&prompt=hi&options.num_gpu=9", msgs("options.num_gpu", "not an option")},
		{"bad number", "/generate", "model=chat&prompt=hi&temperature=abc", msgs("options.temperature", "must be a number", `"abc"`)},
		{"bad number, dotted", "/predict", "task=sentiment&input=hi&options.num_predict=lots", msgs("options.num_predict", "must be a number")},
		{"bad integer", "/generate", "model=chat&prompt=hi&num_predict=2.5", msgs("options.num_predict", "integer")},
		{"option twice", "/generate", "model=chat&prompt=hi&temperature=1&options.temperature=2", msgs(`option "temperature" is given twice`)},
		{"bad boolean", "/generate", "model=chat&prompt=hi&stream=maybe", msgs(`"stream"`, "true or false")},
		{"messages not JSON", "/generate", "model=chat&messages=hello", msgs(`"messages"`, "JSON text")},
		{"prompt twice", "/generate", "model=chat&prompt=a&prompt=b", msgs(`"prompt"`, "2 times")},
		{"duplicate label", "/predict", "labels=bug,bug&input=hi", msgs("labels[1]")},
		{"no labels", "/predict", "labels=&input=hi", msgs(`"task"`, `"labels"`)},
	} {
		for _, enc := range bodyEncodings {
			t.Run(tc.name+" "+enc.name, func(t *testing.T) {
				body, hdr := enc.encode(t, form(tc.fields))
				ts.doError(t, "POST", tc.path, body, http.StatusBadRequest, "invalid_request", tc.msgs, hdr...)
			})
		}
	}
	for _, tc := range []struct {
		name, path, body string
		hdr              []string
		msgs             []string
	}{
		{"JSON string not a number", "/generate", `{"model":"chat","prompt":"hi","options":{"temperature":"abc"}}`, nil,
			msgs("options.temperature", "must be a number", `"abc"`)},
		{"JSON string not a boolean", "/generate", `{"model":"chat","prompt":"hi","stream":"yes"}`, nil, msgs(`"stream"`, "true or false")},
		{"JSON labels of the wrong type", "/predict", `{"labels":5,"input":"hi"}`, nil, msgs(`"labels"`, "comma-separated")},
		{"JSON options of the wrong type", "/generate", `{"model":"chat","prompt":"hi","options":[]}`, nil, msgs(`"options"`, "object")},
		{"JSON unknown field stays an error", "/predict", `{"task":"sentiment","input":"hi","temperature":"0.2"}`, nil, msgs(`unknown field "temperature"`)},
		{"wrong Content-Type", "/embed", "model=embedder&input=hi", []string{"Content-Type", "text/plain"},
			msgs("not valid JSON", "send JSON with Content-Type: application/json, or form fields with Content-Type: application/x-www-form-urlencoded")},
		{"multipart without a boundary", "/embed", "x", []string{"Content-Type", "multipart/form-data"}, msgs("boundary")},
		{"empty form", "/embed", "", []string{"Content-Type", "application/x-www-form-urlencoded"}, msgs("empty", "form fields")},
		{"bad URL encoding", "/embed", "input=%zz", []string{"Content-Type", "application/x-www-form-urlencoded"}, msgs("form encoding")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.doError(t, "POST", tc.path, tc.body, http.StatusBadRequest, "invalid_request", tc.msgs, tc.hdr...)
		})
	}
	if n := fake.Stats().Requests; n != 0 {
		t.Errorf("the fake Ollama got %d requests for requests that should have been refused", n)
	}
}

// TestFormBodyLimit: a form is held to the same body size limit as JSON.
func TestFormBodyLimit(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withMaxBody(1024))
	body, hdr := urlEncoded([]formField{{"model", "chat"}, {"prompt", strings.Repeat("x", 2048)}})
	ts.doError(t, "POST", "/generate", body, http.StatusRequestEntityTooLarge, "body_too_large", []string{"1024 bytes"}, hdr...)
}
