package ollamatest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"tollgate/inference/ollamatest"
)

// ---- helpers ----

func newServer(t *testing.T, opts ...ollamatest.Option) *ollamatest.Server {
	t.Helper()
	srv := ollamatest.NewServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ptr[T any](v T) *T { return &v }

// generate runs a streaming Generate and returns the text chunks, the done
// response (zero if none arrived) and the error.
func generate(t *testing.T, c *api.Client, req *api.GenerateRequest) ([]string, api.GenerateResponse, error) {
	t.Helper()
	var chunks []string
	var done api.GenerateResponse
	err := c.Generate(ctxT(t), req, func(r api.GenerateResponse) error {
		if r.Done {
			done = r
		} else {
			chunks = append(chunks, r.Response)
		}
		return nil
	})
	return chunks, done, err
}

func chat(t *testing.T, c *api.Client, req *api.ChatRequest) ([]string, api.ChatResponse, error) {
	t.Helper()
	var chunks []string
	var done api.ChatResponse
	err := c.Chat(ctxT(t), req, func(r api.ChatResponse) error {
		if r.Done {
			done = r
		} else {
			chunks = append(chunks, r.Message.Content)
		}
		return nil
	})
	return chunks, done, err
}

type rawResponse struct {
	status int
	header http.Header
	body   []byte
	err    error // error reading the body
}

func post(t *testing.T, url, body string) rawResponse {
	t.Helper()
	return do(t, http.MethodPost, url, body)
}

func do(t *testing.T, method, url, body string) rawResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func lines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// shape blanks out what varies from one response to the next (timestamps,
// durations, counts, generated text, context tokens), leaving field names,
// their order and the JSON types: two responses with the same shape are
// byte-compatible.
func shape(line string) string {
	for _, r := range []struct{ re, repl string }{
		{`"created_at":"[^"]*"`, `"created_at":T`},
		{`"(response|content)":"(\\.|[^"\\])*"`, `"$1":S`},
		{`"context":\[[0-9,]*\]`, `"context":[N]`},
		{`":-?[0-9][0-9.e+-]*`, `":N`},
		{`\[-?[0-9][-0-9.e,]*\]`, `[F]`},
	} {
		line = regexp.MustCompile(r.re).ReplaceAllString(line, r.repl)
	}
	return line
}

// Lines captured from a real Ollama v0.10.1 (built from the module with
// go install) serving a tiny llama-architecture model.
const (
	realGenChunk     = `{"model":"tiny","created_at":"2026-11-24T17:54:31.944084924Z","response":"w","done":false}`
	realGenDone      = `{"model":"tiny","created_at":"2026-11-24T17:54:31.964053779Z","response":"","done":true,"done_reason":"length","context":[104,105,119],"total_duration":291461134,"load_duration":263948076,"prompt_eval_count":3,"prompt_eval_duration":6776936,"eval_count":3,"eval_duration":19934580}`
	realGenRawDone   = `{"model":"tiny","created_at":"2026-11-24T17:54:39.537268116Z","response":"","done":true,"done_reason":"length","total_duration":11886864,"load_duration":780730,"prompt_eval_count":3,"prompt_eval_duration":756655,"eval_count":6,"eval_duration":9418393}`
	realGenSingle    = `{"model":"tiny","created_at":"2026-11-24T17:54:39.517347547Z","response":"w\u0004","done":true,"done_reason":"length","context":[104,105,119,4],"total_duration":3297052,"load_duration":967449,"prompt_eval_count":3,"prompt_eval_duration":543428,"eval_count":4,"eval_duration":1198522}`
	realChatChunk    = `{"model":"tiny","created_at":"2026-11-24T17:54:39.485573524Z","message":{"role":"assistant","content":"w"},"done":false}`
	realChatDone     = `{"model":"tiny","created_at":"2026-11-24T17:54:39.492736204Z","message":{"role":"assistant","content":""},"done_reason":"length","done":true,"total_duration":9400567,"load_duration":957714,"prompt_eval_count":3,"prompt_eval_duration":582086,"eval_count":4,"eval_duration":7190611}`
	realChatSingle   = `{"model":"tiny","created_at":"2026-11-24T17:54:39.504464422Z","message":{"role":"assistant","content":"w\u0004"},"done_reason":"length","done":true,"total_duration":4086035,"load_duration":801792,"prompt_eval_count":3,"prompt_eval_duration":630688,"eval_count":4,"eval_duration":2265809}`
	realGenLoad      = `{"model":"tiny","created_at":"2026-11-24T17:54:45.720563032Z","response":"","done":true,"done_reason":"load"}`
	realChatLoad     = `{"model":"tiny","created_at":"2026-11-24T17:54:45.727735226Z","message":{"role":"assistant","content":""},"done_reason":"load","done":true}`
	realGenUnload    = `{"model":"tiny","created_at":"2026-11-24T17:54:45.734234679Z","response":"","done":true,"done_reason":"unload"}`
	realEmbed        = `{"model":"tiny","embeddings":[[0.0052971626,0.037038203,-0.00027637408]],"total_duration":31616810,"load_duration":668274,"prompt_eval_count":7}`
	realEmbedEmpty   = `{"model":"tiny","embeddings":[]}`
	realFormatError  = `{"error":"invalid format: \"\\\"xml\\\"\"; expected \"json\" or a valid JSON Schema object"}`
	realBusy         = `{"error":"server busy, please try again.  maximum pending requests exceeded"}`
	ndjson           = "application/x-ndjson"
	jsonContentType  = "application/json; charset=utf-8"
	textContentType  = "text/plain; charset=utf-8"
	defaultReplyText = "Hello, world"
)

// ---- the happy path, through the official client ----

func TestGenerateStreamsWithOfficialClient(t *testing.T) {
	srv := newServer(t)
	chunks, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "tiny", Prompt: "why is the sky blue"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(chunks, "|"); got != "Hello|,| world" {
		t.Errorf("chunks = %q, want Hello|,| world", got)
	}
	if !done.Done || done.DoneReason != "stop" || done.Model != "tiny" || done.Response != "" {
		t.Errorf("done = %+v", done)
	}
	if done.PromptEvalCount != 5 || done.EvalCount != 3 {
		t.Errorf("prompt_eval_count, eval_count = %d, %d; want 5 (words), 3 (chunks)", done.PromptEvalCount, done.EvalCount)
	}
	m := done.Metrics
	if m.TotalDuration <= 0 || m.LoadDuration <= 0 || m.PromptEvalDuration <= 0 || m.EvalDuration <= 0 {
		t.Errorf("durations must all be set, as from Ollama: %+v", m)
	}
	if m.TotalDuration < m.LoadDuration+m.EvalDuration {
		t.Errorf("total_duration %v < load %v + eval %v", m.TotalDuration, m.LoadDuration, m.EvalDuration)
	}
	if len(done.Context) != 5+3 {
		t.Errorf("context has %d tokens, want prompt+reply = 8", len(done.Context))
	}
	if time.Since(done.CreatedAt) > time.Minute || done.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at = %v", done.CreatedAt)
	}
}

func TestGenerateNotStreamed(t *testing.T) {
	srv := newServer(t)
	var got []api.GenerateResponse
	err := srv.Client().Generate(ctxT(t), &api.GenerateRequest{Model: "tiny", Prompt: "hi", Stream: ptr(false)},
		func(r api.GenerateResponse) error { got = append(got, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Response != defaultReplyText || !got[0].Done || got[0].DoneReason != "stop" || got[0].EvalCount != 3 {
		t.Fatalf("got %+v, want one done response with the whole text", got)
	}
	r := post(t, srv.URL+"/api/generate", `{"model":"tiny","prompt":"hi","stream":false,"options":{"num_predict":2}}`)
	if ct := r.header.Get("Content-Type"); ct != jsonContentType {
		t.Errorf("Content-Type = %q, want %q", ct, jsonContentType)
	}
	if r.header.Get("Content-Length") == "" {
		t.Errorf("a stream:false answer has a Content-Length, as from Ollama")
	}
	if got, want := shape(string(r.body)), shape(realGenSingle); got != want {
		t.Errorf("shape\n got %s\nwant %s", got, want)
	}
}

func TestChatWithOfficialClient(t *testing.T) {
	srv := newServer(t)
	msgs := []api.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "say hello"}}
	chunks, done, err := chat(t, srv.Client(), &api.ChatRequest{Model: "tiny", Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(chunks, "") != defaultReplyText || len(chunks) != 3 {
		t.Errorf("chunks = %q", chunks)
	}
	if done.Message.Role != "assistant" || done.DoneReason != "stop" || done.PromptEvalCount != 4 || done.EvalCount != 3 {
		t.Errorf("done = %+v", done)
	}

	var single []api.ChatResponse
	err = srv.Client().Chat(ctxT(t), &api.ChatRequest{Model: "tiny", Messages: msgs, Stream: ptr(false)},
		func(r api.ChatResponse) error { single = append(single, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(single) != 1 || single[0].Message.Content != defaultReplyText || single[0].Message.Role != "assistant" {
		t.Errorf("stream:false chat = %+v", single)
	}
}

// TestChatToolCalls: Reply.ToolCalls reach the official client in the
// final chat object, streamed or not.
func TestChatToolCalls(t *testing.T) {
	call := api.ToolCall{Function: api.ToolCallFunction{Name: "get_weather", Arguments: api.ToolCallFunctionArguments{"city": "Paris"}}}
	srv := ollamatest.NewServer(ollamatest.WithReply(ollamatest.Reply{Chunks: []string{}, ToolCalls: []api.ToolCall{call}}))
	t.Cleanup(srv.Close)
	for _, stream := range []bool{true, false} {
		var calls []api.ToolCall
		err := srv.Client().Chat(ctxT(t), &api.ChatRequest{Model: "tiny", Messages: []api.Message{{Role: "user", Content: "hi"}}, Stream: &stream},
			func(r api.ChatResponse) error { calls = append(calls, r.Message.ToolCalls...); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments["city"] != "Paris" {
			t.Errorf("stream %v: tool calls %+v", stream, calls)
		}
	}
}

// The bytes on the wire have the shape of Ollama's: same fields, same order,
// same content types.
func TestWireFormatMatchesOllama(t *testing.T) {
	srv := newServer(t)
	cases := []struct {
		name, path, body, ct string
		want                 []string // shapes of the lines
	}{
		{"generate stream", "/api/generate", `{"model":"tiny","prompt":"hi","options":{"num_predict":1}}`, ndjson,
			[]string{realGenChunk, realGenDone}},
		{"generate raw", "/api/generate", `{"model":"tiny","prompt":"hi","raw":true,"options":{"num_predict":1}}`, ndjson,
			[]string{realGenChunk, realGenRawDone}},
		{"generate single", "/api/generate", `{"model":"tiny","prompt":"hi","stream":false,"options":{"num_predict":2}}`, jsonContentType,
			[]string{realGenSingle}},
		{"chat stream", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":1}}`, ndjson,
			[]string{realChatChunk, realChatDone}},
		{"chat single", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":false,"options":{"num_predict":2}}`, jsonContentType,
			[]string{realChatSingle}},
		{"generate load", "/api/generate", `{"model":"tiny"}`, jsonContentType, []string{realGenLoad}},
		{"chat load", "/api/chat", `{"model":"tiny"}`, jsonContentType, []string{realChatLoad}},
		{"generate unload", "/api/generate", `{"model":"tiny","keep_alive":0}`, jsonContentType, []string{realGenUnload}},
		{"embed", "/api/embed", `{"model":"tiny","input":"hello"}`, jsonContentType, []string{realEmbed}},
		{"embed nothing", "/api/embed", `{"model":"tiny","input":[]}`, jsonContentType, []string{realEmbedEmpty}},
		{"bad format", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"format":"xml"}`, ndjson,
			[]string{realFormatError}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, srv.URL+c.path, c.body)
			if r.status != 200 || r.err != nil {
				t.Fatalf("status %d, err %v, body %s", r.status, r.err, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != c.ct {
				t.Errorf("Content-Type = %q, want %q", ct, c.ct)
			}
			got := lines(r.body)
			if len(got) != len(c.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(got), len(c.want), r.body)
			}
			for i := range got {
				if g, w := shape(got[i]), shape(c.want[i]); g != w {
					t.Errorf("line %d\n got %s\nwant %s", i, g, w)
				}
			}
			if c.ct == ndjson && !bytes.HasSuffix(r.body, []byte("\n")) {
				t.Errorf("NDJSON lines end with a newline")
			}
		})
	}
}

func TestJSONEscapingMatchesEncodingJSON(t *testing.T) {
	text := "<b>&\"quoted\"\\ \t\n\x04 \u2028 é 日本 \xff"
	srv := newServer(t, ollamatest.WithReply(ollamatest.Reply{Chunks: []string{text}}))
	r := post(t, srv.URL+"/api/generate", `{"model":"a<b>&c","prompt":"x"}`)
	want, _ := json.Marshal(text)
	model, _ := json.Marshal("a<b>&c")
	first := lines(r.body)[0]
	if !strings.Contains(first, `"response":`+string(want)+`,`) {
		t.Errorf("chunk line %s does not carry %s", first, want)
	}
	if !strings.HasPrefix(first, `{"model":`+string(model)+`,`) {
		t.Errorf("chunk line %s does not start with model %s", first, model)
	}
}

// ---- replies ----

func TestNumPredictStopsTheReply(t *testing.T) {
	srv := newServer(t)
	for _, c := range []struct {
		numPredict any
		text       string
		reason     string
	}{
		{nil, defaultReplyText, "stop"},
		{1, "Hello", "length"},
		{2, "Hello,", "length"},
		{3, defaultReplyText, "length"}, // the limit is hit before the end token
		{4, defaultReplyText, "stop"},
		{0, defaultReplyText, "stop"},
		{-1, defaultReplyText, "stop"},
		{2.9, "Hello,", "length"}, // Ollama truncates floats
	} {
		opts := map[string]any{}
		if c.numPredict != nil {
			opts["num_predict"] = c.numPredict
		}
		chunks, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p", Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(chunks, "") != c.text || done.DoneReason != c.reason || done.EvalCount != len(chunks) {
			t.Errorf("num_predict %v: text %q reason %q eval_count %d; want %q %q %d",
				c.numPredict, strings.Join(chunks, ""), done.DoneReason, done.EvalCount, c.text, c.reason, len(chunks))
		}
	}
}

func TestReplyIsConfigurable(t *testing.T) {
	srv := newServer(t, ollamatest.WithReply(ollamatest.Reply{
		Chunks: []string{"a", "b"}, PromptEvalCount: 100, EvalCount: 7, DoneReason: "custom",
	}))
	chunks, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(chunks, "") != "ab" || done.PromptEvalCount != 100 || done.EvalCount != 7 || done.DoneReason != "custom" {
		t.Errorf("chunks %q done %+v", chunks, done)
	}

	srv.SetReply(ollamatest.Reply{Chunks: []string{}})
	chunks, done, err = generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err != nil || len(chunks) != 0 || !done.Done || done.EvalCount != 0 {
		t.Errorf("empty reply: chunks %q done %+v err %v", chunks, done, err)
	}

	srv.SetReply(ollamatest.Reply{})
	chunks, _, _ = generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if strings.Join(chunks, "") != defaultReplyText {
		t.Errorf("Reply{} must restore the default, got %q", chunks)
	}
}

func TestPromptEvalCountIsDerivedFromWords(t *testing.T) {
	srv := newServer(t)
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"model":"m","prompt":"one two  three\tfour\nfive"}`, 5},
		{`{"model":"m","prompt":"one\u0020two\nthree"}`, 3}, // escapes decoded
		{`{"model":"m","prompt":"one\\ntwo"}`, 1},           // a backslash and an n
		{`{"model":"m","system":"a b","prompt":"c"}`, 3},
		{`{"model":"m","prompt":"   "}`, 1}, // at least one
	} {
		r := post(t, srv.URL+"/api/generate", c.body)
		var done api.GenerateResponse
		ls := lines(r.body)
		if err := json.Unmarshal([]byte(ls[len(ls)-1]), &done); err != nil {
			t.Fatal(err)
		}
		if done.PromptEvalCount != c.want {
			t.Errorf("%s: prompt_eval_count = %d, want %d", c.body, done.PromptEvalCount, c.want)
		}
	}
}

var sentimentSchema = json.RawMessage(`{"type":"object","properties":{"label":{"type":"string","enum":["positive","negative","neutral"]},"score":{"type":"number"}},"required":["label"]}`)

func TestFormatSchemaGetsASatisfyingDocument(t *testing.T) {
	srv := newServer(t)
	for _, stream := range []bool{true, false} {
		chunks, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "classify: great", Format: sentimentSchema, Stream: &stream})
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(chunks, "") + done.Response
		var got struct {
			Label string   `json:"label"`
			Score *float64 `json:"score"`
		}
		if err := json.Unmarshal([]byte(text), &got); err != nil {
			t.Fatalf("stream %v: reply %q is not JSON: %v", stream, text, err)
		}
		if got.Label != "positive" || got.Score == nil {
			t.Errorf("stream %v: reply %q, want the first enum value and every property", stream, text)
		}
		if stream && len(chunks) < 3 {
			t.Errorf("the document is streamed as several chunks, got %q", chunks)
		}
	}

	_, done, err := chat(t, srv.Client(), &api.ChatRequest{Model: "m", Messages: []api.Message{{Role: "user", Content: "x"}}, Format: json.RawMessage(`"json"`), Stream: ptr(false)})
	if err != nil || done.Message.Content != "{}" {
		t.Errorf(`format "json": content %q err %v, want {}`, done.Message.Content, err)
	}
}

func TestFormatSchemaShapes(t *testing.T) {
	srv := newServer(t)
	for _, c := range []struct{ schema, want string }{
		{`{"type":"string","enum":["b","a"]}`, `"b"`},
		{`{"const":42}`, `42`},
		{`{"type":"object","properties":{"z":{"type":"integer"},"a":{"type":"boolean"},"n":{"type":"null"}}}`, `{"z":0,"a":false,"n":null}`},
		{`{"type":"array","items":{"enum":["x","y"]},"minItems":2}`, `["x","x"]`},
		{`{"type":"object","properties":{"labels":{"type":"array","items":{"$ref":"#/$defs/L"}}},"$defs":{"L":{"enum":["pos","neg"]}}}`, `{"labels":["pos"]}`},
		{`{"anyOf":[{"type":"string","minLength":2},{"type":"integer"}]}`, `"aa"`},
		{`{"type":["null","integer"],"minimum":3}`, `3`},
		{`{"type":"object","properties":{"o":{"properties":{"k":{"enum":[{"deep":true}]}}}}}`, `{"o":{"k":{"deep":true}}}`},
	} {
		_, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p", Format: json.RawMessage(c.schema), Stream: ptr(false)})
		if err != nil {
			t.Fatal(err)
		}
		if done.Response != c.want {
			t.Errorf("schema %s: reply %s, want %s", c.schema, done.Response, c.want)
		}
	}
}

func TestJSONChunksOverrideTheDerivedDocument(t *testing.T) {
	srv := newServer(t, ollamatest.WithReply(ollamatest.Reply{JSONChunks: []string{`{"label":`, `"bogus"}`}}))
	chunks, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p", Format: sentimentSchema})
	if err != nil || strings.Join(chunks, "") != `{"label":"bogus"}` {
		t.Errorf("chunks %q err %v", chunks, err)
	}
	// Without a format the ordinary chunks are used.
	chunks, _, _ = generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if strings.Join(chunks, "") != defaultReplyText {
		t.Errorf("chunks %q", chunks)
	}
}

func TestInvalidFormatFailsAsOllamaDoes(t *testing.T) {
	srv := newServer(t)
	_, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p", Format: json.RawMessage(`"xml"`)})
	if err == nil || err.Error() != `invalid format: "\"xml\""; expected "json" or a valid JSON Schema object` {
		t.Errorf("streamed: err = %v", err)
	}
	_, _, err = generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p", Format: json.RawMessage(`[1]`), Stream: ptr(false)})
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || !strings.HasPrefix(se.ErrorMessage, "invalid format: ") {
		t.Errorf("stream:false: err = %#v, want a 500 StatusError", err)
	}
}

// ---- embed ----

func TestEmbed(t *testing.T) {
	srv := newServer(t)
	c := srv.Client()
	resp, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: []string{"hello world", "bye", "hello world"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Embeddings) != 3 || resp.Model != "e" || resp.PromptEvalCount != 5 {
		t.Fatalf("resp = %+v", resp)
	}
	for i, v := range resp.Embeddings {
		if len(v) != ollamatest.DefaultEmbeddingDim {
			t.Errorf("embedding %d has %d values", i, len(v))
		}
		var sum float64
		for _, x := range v {
			sum += float64(x) * float64(x)
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Errorf("embedding %d is not a unit vector: |v|^2 = %v", i, sum)
		}
	}
	if fmt.Sprint(resp.Embeddings[0]) != fmt.Sprint(resp.Embeddings[2]) {
		t.Errorf("equal inputs must get equal vectors")
	}
	if fmt.Sprint(resp.Embeddings[0]) == fmt.Sprint(resp.Embeddings[1]) {
		t.Errorf("different inputs got equal vectors")
	}
	if resp.TotalDuration <= 0 || resp.LoadDuration <= 0 {
		t.Errorf("durations unset: %+v", resp)
	}

	one, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: "hello world"})
	if err != nil || len(one.Embeddings) != 1 || fmt.Sprint(one.Embeddings[0]) != fmt.Sprint(resp.Embeddings[0]) {
		t.Errorf("a string input is one input with the same vector: %+v %v", one, err)
	}

	srv.SetReply(ollamatest.Reply{EmbeddingDim: 768})
	big, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: "x"})
	if err != nil || len(big.Embeddings[0]) != 768 {
		t.Errorf("EmbeddingDim 768: %v", err)
	}

	none, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: ""})
	if err != nil || len(none.Embeddings) != 0 {
		t.Errorf("empty input: %+v %v", none, err)
	}
	_, err = c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: []any{"a", 5}})
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 400 || se.ErrorMessage != "invalid input type" {
		t.Errorf("bad input: %#v", err)
	}
}

// ---- models and the small endpoints ----

func TestUnknownModelGetsOllamas404(t *testing.T) {
	srv := newServer(t, ollamatest.WithModels("tiny", "library/Embedder:v1"))
	c := srv.Client()
	want404 := func(name string, err error, msg string) {
		t.Helper()
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 404 || se.ErrorMessage != msg {
			t.Errorf("%s: err = %#v, want 404 %q", name, err, msg)
		}
	}
	_, _, err := generate(t, c, &api.GenerateRequest{Model: "nope", Prompt: "p"})
	want404("generate", err, `model 'nope' not found`)
	_, _, err = chat(t, c, &api.ChatRequest{Model: "nope", Messages: []api.Message{{Role: "user", Content: "x"}}})
	want404("chat", err, `model "nope" not found, try pulling it first`)
	_, err = c.Embed(ctxT(t), &api.EmbedRequest{Model: "nope", Input: "x"})
	want404("embed", err, `model "nope" not found, try pulling it first`)
	_, err = c.Show(ctxT(t), &api.ShowRequest{Model: "nope"})
	want404("show", err, `model 'nope' not found`)

	r := post(t, srv.URL+"/api/chat", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`)
	if string(r.body) != `{"error":"model \"nope\" not found, try pulling it first"}` || r.header.Get("Content-Type") != jsonContentType {
		t.Errorf("raw 404 body %s", r.body)
	}

	for _, name := range []string{"tiny", "tiny:latest", "TINY", "Tiny:Latest", "library/embedder:V1"} {
		if _, _, err := generate(t, c, &api.GenerateRequest{Model: name, Prompt: "p"}); err != nil {
			t.Errorf("%q must resolve as in Ollama: %v", name, err)
		}
	}
	if _, _, err := generate(t, c, &api.GenerateRequest{Model: "tiny:7b", Prompt: "p"}); err == nil {
		t.Errorf("tiny:7b is another model")
	}
	// The reply echoes the name as requested, as Ollama does.
	_, done, _ := generate(t, c, &api.GenerateRequest{Model: "TINY", Prompt: "p"})
	if done.Model != "TINY" {
		t.Errorf("model = %q", done.Model)
	}
}

func TestSmallEndpoints(t *testing.T) {
	srv := newServer(t, ollamatest.WithModels("tiny", "embedder:v1"), ollamatest.WithVersion("9.9.9"))
	c := srv.Client()
	if err := c.Heartbeat(ctxT(t)); err != nil {
		t.Errorf("Heartbeat: %v", err)
	}
	if v, err := c.Version(ctxT(t)); err != nil || v != "9.9.9" {
		t.Errorf("Version = %q, %v", v, err)
	}
	list, err := c.List(ctxT(t))
	if err != nil || len(list.Models) != 2 || list.Models[0].Name != "tiny:latest" || list.Models[1].Model != "embedder:v1" ||
		list.Models[0].Digest == "" || list.Models[0].Details.Family == "" {
		t.Errorf("List = %+v, %v", list, err)
	}
	show, err := c.Show(ctxT(t), &api.ShowRequest{Model: "Tiny"})
	if err != nil || show.Details.Format != "gguf" || show.ModelInfo["llama.context_length"] == nil || len(show.Capabilities) == 0 {
		t.Errorf("Show = %+v, %v", show, err)
	}

	r := do(t, http.MethodGet, srv.URL+"/", "")
	if string(r.body) != "Ollama is running" || r.header.Get("Content-Type") != textContentType {
		t.Errorf("GET / = %q %q", r.body, r.header.Get("Content-Type"))
	}
	r = do(t, http.MethodGet, srv.URL+"/api/tags", "")
	if !strings.HasPrefix(string(r.body), `{"models":[{"name":"tiny:latest","model":"tiny:latest","modified_at":`) {
		t.Errorf("tags = %s", r.body)
	}
	empty := newServer(t)
	if r := do(t, http.MethodGet, empty.URL+"/api/tags", ""); string(r.body) != `{"models":[]}` {
		t.Errorf("tags without WithModels = %s", r.body)
	}

	// Gin's own 404 and 405, as Ollama sends them.
	r = do(t, http.MethodGet, srv.URL+"/api/nope", "")
	if r.status != 404 || string(r.body) != "404 page not found" || r.header.Get("Content-Type") != "text/plain" {
		t.Errorf("unknown path: %d %q %q", r.status, r.body, r.header.Get("Content-Type"))
	}
	r = do(t, http.MethodGet, srv.URL+"/api/generate", "")
	if r.status != 405 || string(r.body) != "405 method not allowed" || r.header.Get("Allow") != "POST" {
		t.Errorf("GET /api/generate: %d %q allow %q", r.status, r.body, r.header.Get("Allow"))
	}
	r = do(t, http.MethodPost, srv.URL+"/api/tags", "")
	if r.status != 405 || r.header.Get("Allow") != "HEAD, GET" {
		t.Errorf("POST /api/tags: %d allow %q", r.status, r.header.Get("Allow"))
	}
}

// Ollama's answers to malformed or odd requests, reproduced.
func TestRequestErrorsAsOllama(t *testing.T) {
	srv := newServer(t, ollamatest.WithModels("tiny"))
	for _, c := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/api/generate", ``, 400, `{"error":"missing request body"}`},
		{"/api/generate", `{"model":`, 400, `{"error":"unexpected EOF"}`},
		{"/api/generate", `{"model":5}`, 400, `{"error":"json: cannot unmarshal number into Go struct field GenerateRequest.model of type string"}`},
		{"/api/chat", `{"model":5}`, 400, `{"error":"json: cannot unmarshal number into Go struct field ChatRequest.model of type string"}`},
		{"/api/embed", `{"model":5}`, 400, `{"error":"json: cannot unmarshal number into Go struct field EmbedRequest.model of type string"}`},
		{"/api/show", `{"model":5}`, 400, `{"error":"json: cannot unmarshal number into Go struct field ShowRequest.model of type string"}`},
		{"/api/generate", `{"model":"tiny","keep_alive":"abc"}`, 400, `{"error":"time: invalid duration \"abc\""}`},
		{"/api/generate", `{"model":"tiny","keep_alive":true}`, 400, `{"error":"Unsupported type: 'bool'"}`},
		{"/api/generate", `{"model":"tiny","prompt":"x","options":{"num_predict":"a"}}`, 500, `{"error":"option \"num_predict\" must be of type integer"}`},
		{"/api/generate", `{"model":"tiny","raw":true,"system":"s","prompt":"x"}`, 400, `{"error":"raw mode does not support template, system, or context"}`},
		{"/api/generate", `{"model":""}`, 404, `{"error":"model '' not found"}`},
		{"/api/chat", `{"model":""}`, 400, `{"error":"model is required"}`},
		{"/api/show", `{}`, 400, `{"error":"model is required"}`},
		{"/api/embed", `{"model":""}`, 404, `{"error":"model \"\" not found, try pulling it first"}`},
		{"/api/chat", `{"model":"nope","keep_alive":0}`, 404, `{"error":"model 'nope' not found"}`},
		{"/api/embed", `{"model":"tiny","input":5}`, 400, `{"error":"invalid input type"}`},
		{"/api/embed", `{"model":"tiny","input":["a",5]}`, 400, `{"error":"invalid input type"}`},
	} {
		r := post(t, srv.URL+c.path, c.body)
		if r.status != c.status || string(r.body) != c.want {
			t.Errorf("POST %s %s:\n got %d %s\nwant %d %s", c.path, c.body, r.status, r.body, c.status, c.want)
		}
	}
	// Gin decodes one JSON value and ignores what follows it.
	r := post(t, srv.URL+"/api/generate", `{"model":"tiny"} trailing`)
	if r.status != 200 || !strings.Contains(string(r.body), `"done_reason":"load"`) {
		t.Errorf("trailing data: %d %s", r.status, r.body)
	}
	r = post(t, srv.URL+"/api/generate", `{"model":"tiny","keep_alive":"0.5s"}`)
	if !strings.Contains(string(r.body), `"done_reason":"unload"`) {
		t.Errorf("keep_alive under a second unloads: %s", r.body)
	}
}

// ---- faults ----

func TestSlowFirstByte(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.SlowFirstByte(150*time.Millisecond)))
	start := time.Now()
	_, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("answered after %v", el)
	}
	if done.LoadDuration < 150*time.Millisecond {
		t.Errorf("the first-byte delay shows as load_duration, got %v", done.LoadDuration)
	}

	// A client that gives up is noticed at once.
	srv.SetFault(ollamatest.SlowFirstByte(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = srv.Client().Generate(ctx, &api.GenerateRequest{Model: "m", Prompt: "p"}, func(api.GenerateResponse) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
	waitStats(t, srv, func(s ollamatest.Stats) bool { return s.Canceled == 1 && s.InFlight == 0 })
}

func waitStats(t *testing.T, srv *ollamatest.Server, cond func(ollamatest.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Wait(ctx, cond); err != nil {
		t.Fatalf("stats never matched: %+v", srv.Stats())
	}
}

func TestSlowChunks(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.SlowChunks(40*time.Millisecond)))
	var times []time.Time
	err := srv.Client().Generate(ctxT(t), &api.GenerateRequest{Model: "m", Prompt: "p"}, func(api.GenerateResponse) error {
		times = append(times, time.Now())
		return nil
	})
	if err != nil || len(times) != 4 {
		t.Fatalf("%d responses, err %v", len(times), err)
	}
	// Each line leaves the server 40ms after the previous one; allow for
	// delivery jitter on a loaded machine.
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 20*time.Millisecond {
			t.Errorf("gap before line %d = %v, want about 40ms", i, gap)
		}
	}
	if span := times[3].Sub(times[0]); span < 110*time.Millisecond {
		t.Errorf("3 pauses of 40ms took %v", span)
	}
	// stream:false waits as long in total.
	start := time.Now()
	if _, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p", Stream: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 110*time.Millisecond {
		t.Errorf("stream:false answered after %v, want >= 3 pauses", el)
	}
}

// The gateway's acceptance test in miniature: the client hangs up mid-stream
// and the server sees the request canceled.
func TestClientGoneMidStreamIsCounted(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.SlowChunks(time.Hour)))
	ctx, cancel := context.WithCancel(context.Background())
	got := 0
	err := srv.Client().Generate(ctx, &api.GenerateRequest{Model: "m", Prompt: "p"}, func(api.GenerateResponse) error {
		got++
		cancel() // hang up after the first chunk
		return nil
	})
	if got != 1 {
		t.Errorf("got %d chunks before hanging up; err %v", got, err)
	}
	waitStats(t, srv, func(s ollamatest.Stats) bool { return s.Canceled == 1 && s.InFlight == 0 })
}

func TestCutStream(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.CutAfter(2)))
	// The official client does not surface the cut: it returns nil, having
	// seen no done chunk. Callers must check for one.
	chunks, done, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err != nil || len(chunks) != 2 || done.Done {
		t.Errorf("chunks %q done %v err %v; want 2 chunks, no done, nil error", chunks, done.Done, err)
	}
	// On the wire: a 200, two whole lines, then the connection ends without
	// the chunked terminator.
	r := post(t, srv.URL+"/api/chat", `{"model":"m","messages":[{"role":"user","content":"x"}]}`)
	if r.status != 200 || !errors.Is(r.err, io.ErrUnexpectedEOF) {
		t.Errorf("status %d, body error %v; want 200 and unexpected EOF", r.status, r.err)
	}
	if ls := lines(r.body); len(ls) != 2 || !strings.HasSuffix(string(r.body), "\n") {
		t.Errorf("body before the cut: %q", r.body)
	}

	srv.SetFault(ollamatest.CutAfter(0))
	r = post(t, srv.URL+"/api/generate", `{"model":"m","prompt":"p"}`)
	if r.status != 200 || len(r.body) != 0 || r.err == nil {
		t.Errorf("cut after 0: %d %q %v", r.status, r.body, r.err)
	}
	srv.SetFault(ollamatest.CutAfter(99)) // just before the done chunk
	chunks, done, err = generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err != nil || len(chunks) != 3 || done.Done {
		t.Errorf("cut before done: chunks %q done %v err %v", chunks, done.Done, err)
	}

	// A single-object answer is cut halfway through its body.
	r = post(t, srv.URL+"/api/generate", `{"model":"m","prompt":"p","stream":false}`)
	if r.status != 200 || !errors.Is(r.err, io.ErrUnexpectedEOF) || len(r.body) == 0 || json.Valid(r.body) {
		t.Errorf("stream:false cut: %d %q %v", r.status, r.body, r.err)
	}
	if srv.Canceled() != 0 {
		t.Errorf("a cut by the server is not a cancellation: %d", srv.Canceled())
	}
}

func TestErrorLineMidStream(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.ErrorAfter(2, "runner crashed")))
	chunks, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	var se api.StatusError
	if err == nil || err.Error() != "runner crashed" || errors.As(err, &se) || len(chunks) != 2 {
		t.Errorf("chunks %q err %#v; want 2 chunks then errors.New(message)", chunks, err)
	}
	r := post(t, srv.URL+"/api/generate", `{"model":"m","prompt":"p"}`)
	ls := lines(r.body)
	if r.status != 200 || r.err != nil || len(ls) != 3 || ls[2] != `{"error":"runner crashed"}` {
		t.Errorf("wire: %d %v %q", r.status, r.err, ls)
	}
	// stream:false: Ollama answers 500.
	_, _, err = chat(t, srv.Client(), &api.ChatRequest{Model: "m", Messages: []api.Message{{Role: "user", Content: "x"}}, Stream: ptr(false)})
	if !errors.As(err, &se) || se.StatusCode != 500 || se.ErrorMessage != "runner crashed" {
		t.Errorf("stream:false: %#v", err)
	}
	srv.SetFault(ollamatest.ErrorAfter(0, ""))
	_, _, err = generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err == nil || err.Error() != ollamatest.DefaultErrorMessage {
		t.Errorf("default message: %v", err)
	}
}

func TestMalformedLine(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.MalformedAfter(1)))
	chunks, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err == nil || !strings.HasPrefix(err.Error(), "unmarshal: ") || len(chunks) != 1 {
		t.Errorf("chunks %q err %v", chunks, err)
	}
	r := post(t, srv.URL+"/api/generate", `{"model":"m","prompt":"p"}`)
	ls := lines(r.body)
	if len(ls) != 5 || json.Valid([]byte(ls[1])) {
		t.Fatalf("want 3 chunks + 1 broken + done, got %q", ls)
	}
	for _, i := range []int{0, 2, 3, 4} {
		if !json.Valid([]byte(ls[i])) {
			t.Errorf("line %d is broken too: %s", i, ls[i])
		}
	}
	r = post(t, srv.URL+"/api/embed", `{"model":"m","input":"x"}`)
	if r.status != 200 || json.Valid(r.body) {
		t.Errorf("embed: %d %s", r.status, r.body)
	}
}

func TestStatusFaults(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.Busy()))
	c := srv.Client()
	_, _, err := generate(t, c, &api.GenerateRequest{Model: "m", Prompt: "p"})
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 503 || se.ErrorMessage != "server busy, please try again.  maximum pending requests exceeded" {
		t.Errorf("busy: %#v", err)
	}
	if r := post(t, srv.URL+"/api/embed", `{"model":"m","input":"x"}`); r.status != 503 || string(r.body) != realBusy {
		t.Errorf("busy body %s", r.body)
	}
	// Faults leave the other endpoints alone unless told.
	if err := c.Heartbeat(ctxT(t)); err != nil {
		t.Errorf("heartbeat during busy fault: %v", err)
	}

	srv.SetFault(ollamatest.ModelNotFound())
	_, _, err = chat(t, c, &api.ChatRequest{Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: "x"}}})
	if !errors.As(err, &se) || se.StatusCode != 404 || se.ErrorMessage != `model "llama3.2" not found, try pulling it first` {
		t.Errorf("not found: %#v", err)
	}

	srv.SetFault(ollamatest.StatusFault(502, "<html>bad gateway</html>"))
	r := post(t, srv.URL+"/api/generate", `{"model":"m","prompt":"p"}`)
	if r.status != 502 || string(r.body) != "<html>bad gateway</html>" || r.header.Get("Content-Type") != textContentType {
		t.Errorf("custom: %d %q %q", r.status, r.body, r.header.Get("Content-Type"))
	}
	srv.SetFault(ollamatest.Fault{Status: 500})
	if r := post(t, srv.URL+"/api/generate", `{"model":"m","prompt":"p"}`); r.status != 500 || string(r.body) != `{"error":"internal server error"}` {
		t.Errorf("default body: %d %s", r.status, r.body)
	}

	srv.SetFault(ollamatest.Fault{Status: 500, Paths: []string{"/api/version", "/"}})
	if _, err := c.Version(ctxT(t)); !errors.As(err, &se) || se.StatusCode != 500 {
		t.Errorf("version with fault: %v", err)
	}
	if err := c.Heartbeat(ctxT(t)); err == nil {
		t.Errorf("heartbeat with fault succeeded")
	}
	if _, _, err := generate(t, c, &api.GenerateRequest{Model: "m", Prompt: "p"}); err != nil {
		t.Errorf("generate is not in Paths: %v", err)
	}
}

func TestHangup(t *testing.T) {
	srv := newServer(t, ollamatest.WithFault(ollamatest.Hangup()))
	_, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if err == nil || !(errors.Is(err, io.EOF) || strings.Contains(err.Error(), "EOF")) {
		t.Errorf("err = %v, want EOF", err)
	}
}

func TestFaultTimesAndModel(t *testing.T) {
	srv := newServer(t)
	c := srv.Client()
	f := ollamatest.Busy()
	f.Times = 2
	srv.SetFault(f)
	var errs []bool
	for range 4 {
		_, _, err := generate(t, c, &api.GenerateRequest{Model: "m", Prompt: "p"})
		errs = append(errs, err != nil)
	}
	if fmt.Sprint(errs) != "[true true false false]" {
		t.Errorf("failures = %v, want the first two only", errs)
	}

	srv.SetFault(ollamatest.Fault{Status: 503, Model: "big"})
	if _, _, err := generate(t, c, &api.GenerateRequest{Model: "small", Prompt: "p"}); err != nil {
		t.Errorf("small: %v", err)
	}
	if _, _, err := generate(t, c, &api.GenerateRequest{Model: "BIG:latest", Prompt: "p"}); err == nil {
		t.Errorf("big: no fault")
	}
	if s := srv.Stats(); s.Faulted != 3 {
		t.Errorf("faulted = %d, want 3", s.Faulted)
	}
	srv.SetFault(ollamatest.Fault{})
	if _, _, err := generate(t, c, &api.GenerateRequest{Model: "big", Prompt: "p"}); err != nil {
		t.Errorf("Fault{} clears: %v", err)
	}
}

func TestFaultsOnSingleAndEmbedAnswers(t *testing.T) {
	srv := newServer(t)
	c := srv.Client()
	srv.SetFault(ollamatest.ErrorAfter(0, "embed failed"))
	_, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: "x"})
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || se.ErrorMessage != "embed failed" {
		t.Errorf("embed error: %#v", err)
	}
	srv.SetFault(ollamatest.CutAfter(0))
	if _, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: "x"}); err == nil {
		t.Errorf("embed cut: no error")
	}
	srv.SetFault(ollamatest.MalformedAfter(0))
	if _, _, err := generate(t, c, &api.GenerateRequest{Model: "m", Prompt: "p", Stream: ptr(false)}); err == nil {
		t.Errorf("stream:false malformed: no error")
	}
}

// Hold pins requests in flight until the test lets them go: the way to test
// a gateway's concurrency limits without timing.
func TestHoldPinsRequestsInFlight(t *testing.T) {
	hold := make(chan struct{})
	srv := newServer(t, ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
			errs <- err
		}()
	}
	waitStats(t, srv, func(s ollamatest.Stats) bool { return s.InFlight == 3 })
	if srv.InFlight() != 3 {
		t.Errorf("InFlight = %d", srv.InFlight())
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if s := srv.Stats(); s.InFlight != 0 || s.MaxInFlight != 3 || s.Requests != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestCloseReleasesHeldRequests(t *testing.T) {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.Fault{Hold: make(chan struct{})}))
	errc := make(chan error, 1)
	go func() {
		_, _, err := generate(t, srv.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
		errc <- err
	}()
	waitStats(t, srv, func(s ollamatest.Stats) bool { return s.InFlight == 1 })
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a held request")
	}
	if err := <-errc; err == nil {
		t.Errorf("the held request succeeded after Close")
	}
	srv.Close() // twice is fine
}

func TestRefusedURL(t *testing.T) {
	u := ollamatest.RefusedURL(t)
	resp, err := http.Get(u + "/api/version")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("something answered at %s", u)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %v, want connection refused", err)
	}
}

// ---- what the server saw ----

func TestRequestsRecordsWhatWasForwarded(t *testing.T) {
	srv := newServer(t)
	c := srv.Client()
	_, _, _ = generate(t, c, &api.GenerateRequest{
		Model: "tiny", Prompt: "hi", System: "sys", Stream: ptr(false), Format: sentimentSchema,
		KeepAlive: &api.Duration{Duration: 30 * time.Second}, Options: map[string]any{"num_predict": 64, "temperature": 0.2},
	})
	_, _, _ = chat(t, c, &api.ChatRequest{Model: "tiny", Messages: []api.Message{{Role: "user", Content: "yo"}}})
	_, _ = c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: "one"})
	_, _ = c.Embed(ctxT(t), &api.EmbedRequest{Model: "e", Input: []string{"a", "b"}})

	reqs := srv.Requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests recorded", len(reqs))
	}
	g := reqs[0]
	if g.Method != "POST" || g.Path != "/api/generate" || g.Model != "tiny" || g.Prompt != "hi" || g.System != "sys" ||
		g.Streaming() || string(g.Format) != string(sentimentSchema) || g.KeepAlive == nil || g.KeepAlive.Duration != 30*time.Second ||
		g.Options["temperature"] != 0.2 || g.Header.Get("Content-Type") != "application/json" || !json.Valid(g.Body) {
		t.Errorf("generate recorded as %+v", g)
	}
	if n, ok := g.NumPredict(); !ok || n != 64 {
		t.Errorf("NumPredict = %d, %v", n, ok)
	}
	if ch := reqs[1]; ch.Path != "/api/chat" || len(ch.Messages) != 1 || ch.Messages[0].Content != "yo" || !ch.Streaming() {
		t.Errorf("chat recorded as %+v", ch)
	}
	if fmt.Sprint(reqs[2].Input) != "[one]" || fmt.Sprint(reqs[3].Input) != "[a b]" {
		t.Errorf("inputs %q %q", reqs[2].Input, reqs[3].Input)
	}
	if last, ok := srv.LastRequest(); !ok || fmt.Sprint(last.Input) != "[a b]" {
		t.Errorf("LastRequest = %+v", last)
	}
	srv.Reset()
	if len(srv.Requests()) != 0 || srv.Stats().Requests != 0 {
		t.Errorf("Reset kept %d requests", len(srv.Requests()))
	}

	quiet := newServer(t, ollamatest.WithoutRecording())
	_, _, _ = generate(t, quiet.Client(), &api.GenerateRequest{Model: "m", Prompt: "p"})
	if len(quiet.Requests()) != 0 || quiet.Stats().Requests != 1 {
		t.Errorf("WithoutRecording recorded %d", len(quiet.Requests()))
	}
}

// Faults and replies may change while requests are being served.
func TestConcurrentUse(t *testing.T) {
	srv := newServer(t)
	c := srv.Client()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 4 {
			case 0:
				srv.SetFault(ollamatest.CutAfter(1))
			case 1:
				srv.SetReply(ollamatest.Reply{Chunks: []string{"x", "y"}})
			case 2:
				srv.SetFault(ollamatest.Fault{})
			case 3:
				srv.SetReply(ollamatest.Reply{})
			}
			_ = srv.Stats()
			_ = srv.Requests()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var clients sync.WaitGroup
	for g := range 8 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := range 25 {
				if (g+i)%2 == 0 {
					_, _, _ = generate(t, c, &api.GenerateRequest{Model: "m", Prompt: "p"})
				} else {
					_, _ = c.Embed(ctxT(t), &api.EmbedRequest{Model: "m", Input: []string{"a", "b"}})
				}
			}
		}()
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	waitStats(t, srv, func(s ollamatest.Stats) bool { return s.InFlight == 0 && s.Requests == 200 })
}

// ---- benchmarks ----

// BenchmarkGenerate measures a whole request through a keep-alive loopback
// connection: the HTTP client's cost included, so it is an upper bound on
// the fake's own cost per request. See BenchmarkServeHTTP for the handler
// alone.
func BenchmarkGenerate(b *testing.B) {
	for _, c := range []struct{ name, path, body string }{
		{"stream", "/api/generate", `{"model":"tiny","prompt":"why is the sky blue","options":{"num_predict":128,"temperature":0.7}}`},
		{"single", "/api/generate", `{"model":"tiny","prompt":"why is the sky blue","stream":false}`},
		{"chat", "/api/chat", `{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}`},
		{"schema", "/api/generate", `{"model":"tiny","prompt":"classify","stream":false,"format":` + string(sentimentSchema) + `}`},
		{"embed", "/api/embed", `{"model":"tiny","input":["hello world","bye"]}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := ollamatest.NewServer(ollamatest.WithModels("tiny"), ollamatest.WithoutRecording())
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			body := []byte(c.body)
			url := srv.URL + c.path
			buf := make([]byte, 64<<10)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// Parallel load from many clients, as the gateway's load benchmarks will
// put on it.
func BenchmarkGenerateParallel(b *testing.B) {
	srv := ollamatest.NewServer(ollamatest.WithoutRecording())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	body := []byte(`{"model":"tiny","prompt":"why is the sky blue"}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 64<<10)
		for pb.Next() {
			resp, err := client.Post(srv.URL+"/api/generate", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			br := bufio.NewReader(resp.Body)
			for {
				if _, err := br.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
		}
	})
}
