package inference

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// testCatalog parses a catalog with one backend at url, extra backend
// fields (e.g. "first_byte_timeout: 50ms") and the models "tiny"
// (generate, predict; at most 100 output tokens) and "embedder".
func testCatalog(t *testing.T, url, backendExtra, ollamaModel string) *Catalog {
	t.Helper()
	if backendExtra != "" {
		backendExtra = "\n    " + backendExtra
	}
	src := fmt.Sprintf(`backends:
  - url: %s%s
models:
  tiny:
    ollama: %s
    endpoints: [generate, predict]
    options: {top_k: 20}
    limits: {max_num_predict: 100}
  embedder:
    ollama: %s
    endpoints: [embed]
`, url, backendExtra, ollamaModel, ollamaModel)
	c, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return c
}

// fake starts a fake Ollama serving the model "tiny" and returns it with a
// client for it and the catalog's models tiny and embedder.
func fake(t *testing.T, backendExtra string, opts ...ollamatest.Option) (*ollamatest.Server, *Client, Model, Model) {
	t.Helper()
	srv := ollamatest.NewServer(append([]ollamatest.Option{ollamatest.WithModels("tiny")}, opts...)...)
	t.Cleanup(srv.Close)
	c := NewClient(testCatalog(t, srv.URL, backendExtra, "tiny"))
	return srv, c, c.Catalog().Models["tiny"], c.Catalog().Models["embedder"]
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func lastRequest(t *testing.T, srv *ollamatest.Server) ollamatest.Request {
	t.Helper()
	req, ok := srv.LastRequest()
	if !ok {
		t.Fatal("the fake Ollama received no request")
	}
	return req
}

func TestGenerateStreams(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "", ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"Hel", "lo", ", ", "you"}, PromptEvalCount: 11, EvalCount: 7}))
	ctx := testContext(t)

	var pieces []string
	res, err := c.Generate(ctx, tiny, GenerateRequest{Prompt: "say hello", System: "be brief"}, func(s string) error {
		pieces = append(pieces, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Hel", "lo", ", ", "you"}; !reflect.DeepEqual(pieces, want) {
		t.Errorf("onText got %q, want %q", pieces, want)
	}
	want := Result{Text: "", DoneReason: "stop", Usage: Usage{PromptTokens: 11, CompletionTokens: 7}, Chunks: 4, Done: true}
	if res.FirstToken <= 0 {
		t.Errorf("FirstToken = %v, want the time to the first piece", res.FirstToken)
	}
	res.FirstToken = 0
	if !reflect.DeepEqual(res, want) {
		t.Errorf("Result = %+v, want %+v", res, want)
	}
	req := lastRequest(t, srv)
	if n, ok := req.NumPredict(); req.Path != "/api/generate" || !req.Streaming() || !ok || n != 100 ||
		req.Model != "tiny" || req.Prompt != "say hello" || req.System != "be brief" || req.Options["top_k"] != 20.0 ||
		req.KeepAlive != nil || req.Format != nil {
		t.Errorf("sent %s %s: %s", req.Method, req.Path, req.Body)
	}

	// Without onText the text is collected.
	res, err = c.Generate(ctx, tiny, GenerateRequest{Prompt: "again"}, nil)
	if err != nil || res.Text != "Hello, you" || res.Chunks != 4 || !res.Done {
		t.Errorf("Generate without onText = %+v, %v", res, err)
	}
}

func TestGenerateChat(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "")
	keep := 2 * time.Minute
	res, err := c.Generate(testContext(t), tiny, GenerateRequest{
		System:    "you are terse",
		Messages:  []Message{{Role: "user", Content: "hi there"}, {Role: "assistant", Content: "hello"}, {Role: "user", Content: "bye"}},
		Options:   map[string]any{"temperature": 0.0, "num_predict": 5, "top_k": 1},
		Format:    json.RawMessage(`"json"`),
		KeepAlive: &keep,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The fake answers "json" with {} and counts the words of all messages,
	// the system one included.
	if res.Text != "{}" || !res.Done || res.Usage.PromptTokens != 7 {
		t.Errorf("Result = %+v", res)
	}
	req := lastRequest(t, srv)
	wantMsgs := []struct{ role, content string }{{"system", "you are terse"}, {"user", "hi there"}, {"assistant", "hello"}, {"user", "bye"}}
	if len(req.Messages) != len(wantMsgs) {
		t.Fatalf("sent messages %+v", req.Messages)
	}
	for i, m := range wantMsgs {
		if req.Messages[i].Role != m.role || req.Messages[i].Content != m.content {
			t.Errorf("message %d = %+v, want %+v", i, req.Messages[i], m)
		}
	}
	wantOpts := map[string]any{"temperature": 0.0, "num_predict": 5.0, "top_k": 1.0}
	if req.Path != "/api/chat" || !req.Streaming() || string(req.Format) != `"json"` ||
		req.KeepAlive == nil || req.KeepAlive.Duration != keep || !reflect.DeepEqual(req.Options, wantOpts) {
		t.Errorf("sent %s: %s", req.Path, req.Body)
	}
}

func TestGenerateClampsNumPredict(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "")
	for _, tc := range []struct {
		opts map[string]any
		want int
	}{
		{nil, 100},
		{map[string]any{"num_predict": 7}, 7},
		{map[string]any{"num_predict": 100000}, 100},
		{map[string]any{"num_predict": -1}, 100},
	} {
		if _, err := c.Generate(testContext(t), tiny, GenerateRequest{Prompt: "x", Options: tc.opts}, nil); err != nil {
			t.Fatal(err)
		}
		if n, ok := lastRequest(t, srv).NumPredict(); !ok || n != tc.want {
			t.Errorf("options %v: sent num_predict %d (set %v), want %d", tc.opts, n, ok, tc.want)
		}
	}
}

func TestGenerateRefusesBadFormat(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "")
	for _, format := range []string{`"yaml"`, `[1]`, `42`, `{`} {
		_, err := c.Generate(testContext(t), tiny, GenerateRequest{Prompt: "x", Format: json.RawMessage(format)}, nil)
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Field != "format" {
			t.Errorf("format %s: error %v, want *InvalidError for format", format, err)
		}
	}
	for _, format := range []string{``, `null`, `"json"`, `{"type":"object"}`} {
		if _, err := c.Generate(testContext(t), tiny, GenerateRequest{Prompt: "x", Format: json.RawMessage(format)}, nil); err != nil {
			t.Errorf("format %q: %v", format, err)
		}
	}
	if got := srv.Stats().Requests; got != 4 {
		t.Errorf("the fake received %d requests, want only the 4 valid ones", got)
	}
}

// TestUpstreamFaults maps each fault the fake can show to the error a
// handler gets, for a streamed completion, a chat and an embedding.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	type check func(t *testing.T, err error, res Result)
	upstream := func(status int, msg string) check {
		return func(t *testing.T, err error, _ Result) {
			var up *UpstreamError
			if !errors.As(err, &up) || up.Status != status || !strings.Contains(up.Message, msg) {
				t.Errorf("error %v (%T), want *UpstreamError status %d containing %q", err, err, status, msg)
			}
		}
	}
	chunks := func(n int, c check) check {
		return func(t *testing.T, err error, res Result) {
			c(t, err, res)
			if res.Chunks != n || res.Done {
				t.Errorf("Result %+v, want %d chunks and not done", res, n)
			}
		}
	}
	missing := func(t *testing.T, err error, _ Result) {
		var mm *ModelMissingError
		if !errors.As(err, &mm) || mm.Ollama != "tiny" || !strings.Contains(err.Error(), "ollama pull tiny") {
			t.Errorf("error %v (%T), want *ModelMissingError saying ollama pull tiny", err, err)
		}
	}
	busy := func(t *testing.T, err error, _ Result) {
		if !errors.Is(err, ErrBusy) {
			t.Errorf("error %v, want ErrBusy", err)
		}
	}
	for _, tc := range []struct {
		name     string
		fault    ollamatest.Fault
		generate check // also run as a chat
		embed    check // nil: not run
	}{
		{"cut", ollamatest.CutAfter(2), chunks(2, upstream(0, "ended before its final chunk")), nil},
		{"cut before any chunk", ollamatest.CutAfter(0), chunks(0, upstream(0, "ended before its final chunk")), nil},
		{"error line", ollamatest.ErrorAfter(1, "CUDA error: out of memory"), chunks(1, upstream(0, "CUDA error: out of memory")), upstream(500, "CUDA error: out of memory")},
		{"malformed", ollamatest.MalformedAfter(1), chunks(1, upstream(0, "sent a malformed stream")), nil},
		{"model not found", ollamatest.ModelNotFound(), missing, missing},
		{"busy", ollamatest.Busy(), busy, busy},
		{"too many requests", ollamatest.StatusFault(http.StatusTooManyRequests, ""), busy, busy},
		{"500 with Ollama's JSON", ollamatest.StatusFault(500, `{"error":"llama runner process has terminated"}`), upstream(500, "llama runner process has terminated"), upstream(500, "llama runner process has terminated")},
		{"500 not JSON", ollamatest.StatusFault(500, "<html>oops</html>"), upstream(500, "Internal Server Error"), upstream(500, "")},
		{"502 not JSON", ollamatest.StatusFault(502, "bad gateway"), upstream(502, "Bad Gateway"), upstream(502, "")},
		{"hangup", ollamatest.Hangup(), upstream(0, "broke before it answered"), upstream(0, "broke before it answered")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c, tiny, embedder := fake(t, "", ollamatest.WithFault(tc.fault))
			var pieces int
			res, err := c.Generate(testContext(t), tiny, GenerateRequest{Prompt: "hello"}, func(string) error { pieces++; return nil })
			tc.generate(t, err, res)
			if pieces != res.Chunks {
				t.Errorf("onText saw %d pieces, Result.Chunks = %d", pieces, res.Chunks)
			}
			res, err = c.Generate(testContext(t), tiny, GenerateRequest{Messages: []Message{{Role: "user", Content: "hello"}}}, nil)
			tc.generate(t, err, res)
			if tc.embed != nil {
				_, err := c.Embed(testContext(t), embedder, []string{"a", "b"}, nil)
				tc.embed(t, err, Result{})
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	refused := ollamatest.RefusedURL(t)
	c := NewClient(testCatalog(t, refused, "", "tiny"))
	ctx := testContext(t)
	tiny, embedder := c.Catalog().Models["tiny"], c.Catalog().Models["embedder"]
	for name, call := range map[string]func() error{
		"ping":     func() error { _, err := c.Ping(ctx); return err },
		"generate": func() error { _, err := c.Generate(ctx, tiny, GenerateRequest{Prompt: "x"}, nil); return err },
		"embed":    func() error { _, err := c.Embed(ctx, embedder, []string{"x"}, nil); return err },
		"predict": func() error {
			_, err := c.Predict(ctx, tiny, PredictRequest{Labels: []string{"a", "b"}, Inputs: []string{"x"}})
			return err
		},
	} {
		err := call()
		var ue *UnreachableError
		if !errors.As(err, &ue) || ue.URL != refused || err.Error() != "Ollama at "+refused+" is not reachable" {
			t.Errorf("%s: error %v (%T), want *UnreachableError for %s", name, err, err, refused)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: error %v does not unwrap to ECONNREFUSED", name, err)
		}
	}
}

// A dial that times out means Ollama is not reachable, not that it was
// slow to answer.
func TestClassifyDialTimeout(t *testing.T) {
	b := &backend{url: "http://10.1.2.3:11434", firstByte: time.Minute}
	dialTimeout := &url.Error{Op: "Post", URL: b.url + "/api/chat", Err: &net.OpError{Op: "dial", Net: "tcp", Err: timeoutError{}}}
	err := b.classify(context.Background(), dialTimeout, 0, "tiny")
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.URL != b.url {
		t.Errorf("dial timeout classified as %v (%T), want *UnreachableError", err, err)
	}
	headerTimeout := &url.Error{Op: "Post", URL: b.url + "/api/chat", Err: timeoutError{}}
	err = b.classify(context.Background(), headerTimeout, 0, "tiny")
	var te *TimeoutError
	if !errors.As(err, &te) || te.After != time.Minute {
		t.Errorf("response timeout classified as %v (%T), want *TimeoutError", err, err)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestFirstByteTimeout(t *testing.T) {
	t.Parallel()
	srv, c, tiny, embedder := fake(t, "first_byte_timeout: 50ms", ollamatest.WithFault(ollamatest.SlowFirstByte(time.Hour)))
	ctx := testContext(t)
	start := time.Now()
	_, err := c.Generate(ctx, tiny, GenerateRequest{Prompt: "x"}, func(string) error { return nil })
	var te *TimeoutError
	if !errors.As(err, &te) || te.URL != srv.URL || te.After != 50*time.Millisecond ||
		err.Error() != "Ollama at "+srv.URL+" did not answer within 50ms" {
		t.Fatalf("error %v (%T), want *TimeoutError after 50ms", err, err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("the timeout fired after %v", elapsed)
	}
	_, err = c.Embed(ctx, embedder, []string{"x"}, nil)
	if !errors.As(err, &te) {
		t.Errorf("embed error %v (%T), want *TimeoutError", err, err)
	}
	// The fake saw both requests go: the slow model load is not left running.
	if err := srv.Wait(ctx, func(s ollamatest.Stats) bool { return s.Canceled == 2 }); err != nil {
		t.Errorf("the fake saw %d cancellations, want 2", srv.Canceled())
	}
}

// A stream that has started is not bounded by the first-byte timeout.
func TestFirstByteTimeoutSparesSlowStreams(t *testing.T) {
	t.Parallel()
	_, c, tiny, _ := fake(t, "first_byte_timeout: 1s", ollamatest.WithFault(ollamatest.SlowChunks(400*time.Millisecond)),
		ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"a", "b", "c"}}))
	res, err := c.Generate(testContext(t), tiny, GenerateRequest{Prompt: "x"}, nil)
	if err != nil || res.Text != "abc" {
		t.Errorf("slow stream: %+v, %v", res, err)
	}
}

func TestCancelStopsOllama(t *testing.T) {
	t.Parallel()
	t.Run("mid-stream", func(t *testing.T) {
		t.Parallel()
		srv, c, tiny, _ := fake(t, "", ollamatest.WithFault(ollamatest.SlowChunks(time.Hour)))
		ctx, cancel := context.WithCancel(testContext(t))
		defer cancel()
		res, err := c.Generate(ctx, tiny, GenerateRequest{Prompt: "x"}, func(string) error { cancel(); return nil })
		if !errors.Is(err, context.Canceled) || res.Chunks != 1 || res.Done {
			t.Errorf("Generate = %+v, %v; want context.Canceled after one chunk", res, err)
		}
		if err := srv.Wait(testContext(t), func(s ollamatest.Stats) bool { return s.Canceled == 1 && s.InFlight == 0 }); err != nil {
			t.Errorf("the fake did not see the request go: %+v", srv.Stats())
		}
	})
	t.Run("before the first byte", func(t *testing.T) {
		t.Parallel()
		hold := make(chan struct{})
		defer close(hold)
		srv, c, _, embedder := fake(t, "", ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
		ctx, cancel := context.WithCancel(testContext(t))
		errc := make(chan error, 1)
		go func() { _, err := c.Embed(ctx, embedder, []string{"x"}, nil); errc <- err }()
		if err := srv.Wait(testContext(t), func(s ollamatest.Stats) bool { return s.InFlight == 1 }); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Embed error %v, want context.Canceled", err)
		}
		if err := srv.Wait(testContext(t), func(s ollamatest.Stats) bool { return s.Canceled == 1 }); err != nil {
			t.Errorf("the fake did not see the request go: %+v", srv.Stats())
		}
	})
	t.Run("deadline", func(t *testing.T) {
		t.Parallel()
		_, c, tiny, _ := fake(t, "", ollamatest.WithFault(ollamatest.SlowChunks(time.Hour)))
		ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
		defer cancel()
		res, err := c.Generate(ctx, tiny, GenerateRequest{Prompt: "x"}, nil)
		if !errors.Is(err, context.DeadlineExceeded) || res.Text != "Hello" {
			t.Errorf("Generate = %+v, %v; want context.DeadlineExceeded after Hello", res, err)
		}
	})
}

func TestOnTextErrorStops(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "", ollamatest.WithFault(ollamatest.SlowChunks(time.Hour)))
	stop := errors.New("client write failed")
	for _, req := range []GenerateRequest{{Prompt: "x"}, {Messages: []Message{{Role: "user", Content: "x"}}}} {
		srv.Reset()
		calls := 0
		res, err := c.Generate(testContext(t), tiny, req, func(string) error { calls++; return stop })
		if err != stop || calls != 1 || res.Chunks != 1 {
			t.Errorf("Generate = %+v, %v after %d calls; want exactly the callback's error after one", res, err, calls)
		}
		if err := srv.Wait(testContext(t), func(s ollamatest.Stats) bool { return s.Canceled == 1 }); err != nil {
			t.Errorf("the fake did not see the request go: %+v", srv.Stats())
		}
	}
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	srv, c, _, embedder := fake(t, "", ollamatest.WithReply(ollamatest.Reply{EmbeddingDim: 16}))
	ctx := testContext(t)

	_, err := c.Embed(ctx, embedder, nil, nil)
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Field != "input" {
		t.Errorf("Embed(no input) error %v, want *InvalidError for input", err)
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("an empty input reached Ollama (%d requests)", n)
	}

	keep := time.Minute
	for _, inputs := range [][]string{{"one two"}, {"one", "two three", "one"}} {
		res, err := c.Embed(ctx, embedder, inputs, &keep)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Embeddings) != len(inputs) {
			t.Fatalf("%d embeddings for %d inputs", len(res.Embeddings), len(inputs))
		}
		for i, e := range res.Embeddings {
			if len(e) != 16 {
				t.Errorf("embedding %d has %d dimensions, want 16", i, len(e))
			}
		}
		if res.Usage != (Usage{PromptTokens: len(strings.Fields(strings.Join(inputs, " ")))}) {
			t.Errorf("usage %+v for %q", res.Usage, inputs)
		}
		req := lastRequest(t, srv)
		if req.Path != "/api/embed" || req.Model != "tiny" || !reflect.DeepEqual(req.Input, inputs) || req.KeepAlive == nil || req.KeepAlive.Duration != keep {
			t.Errorf("sent %s: %s", req.Path, req.Body)
		}
		if single := len(inputs) == 1; single != strings.Contains(string(req.Body), `"input":"`) {
			t.Errorf("%d inputs sent as %s", len(inputs), req.Body)
		}
		if len(inputs) == 3 && !reflect.DeepEqual(res.Embeddings[0], res.Embeddings[2]) {
			t.Error("equal inputs got different vectors: the order is not kept")
		}
	}
}

func TestPredict(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "", ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 9, EvalCount: 4}))
	ctx := testContext(t)
	labels := []string{"positive", "negative"}
	res, err := c.Predict(ctx, tiny, PredictRequest{Labels: labels, Instruction: "  Judge the tone. ", Inputs: []string{"I love it", "meh"}})
	if err != nil {
		t.Fatal(err)
	}
	// The fake answers a schema with the first value of its enum.
	want := PredictResult{Predictions: []Prediction{{"positive"}, {"positive"}}, Usage: Usage{PromptTokens: 18, CompletionTokens: 8}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("Predict = %+v, want %+v", res, want)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want one per input", len(reqs))
	}
	for i, req := range reqs {
		var schema struct {
			Type       string `json:"type"`
			Properties struct {
				Label struct {
					Type string   `json:"type"`
					Enum []string `json:"enum"`
				} `json:"label"`
			} `json:"properties"`
			Required []string `json:"required"`
		}
		if err := json.Unmarshal(req.Format, &schema); err != nil {
			t.Fatalf("format %s: %v", req.Format, err)
		}
		if schema.Type != "object" || schema.Properties.Label.Type != "string" || !reflect.DeepEqual(schema.Properties.Label.Enum, labels) ||
			!reflect.DeepEqual(schema.Required, []string{"label"}) {
			t.Errorf("format %s does not constrain the label to %v", req.Format, labels)
		}
		if n, _ := req.NumPredict(); req.Path != "/api/chat" || req.Options["temperature"] != 0.0 || n != 48 || !req.Streaming() {
			t.Errorf("sent %s: %s", req.Path, req.Body)
		}
		if len(req.Messages) != 2 || req.Messages[0].Role != "system" || req.Messages[1].Role != "user" ||
			!strings.HasPrefix(req.Messages[0].Content, "Judge the tone.\n") || !strings.Contains(req.Messages[0].Content, "positive, negative") ||
			req.Messages[1].Content != []string{"I love it", "meh"}[i] {
			t.Errorf("messages %+v", req.Messages)
		}
	}

	// The caller's options win over the defaults, within the model's limits.
	if _, err := c.Predict(ctx, tiny, PredictRequest{Labels: labels, Inputs: []string{"x"}, Options: map[string]any{"temperature": 0.3, "num_predict": 500}}); err != nil {
		t.Fatal(err)
	}
	if req := lastRequest(t, srv); req.Options["temperature"] != 0.3 || req.Options["num_predict"] != 100.0 {
		t.Errorf("options sent: %v", req.Options)
	}
}

func TestPredictRefuses(t *testing.T) {
	t.Parallel()
	srv, c, tiny, _ := fake(t, "")
	for _, tc := range []struct {
		req   PredictRequest
		field string
	}{
		{PredictRequest{Inputs: []string{"x"}}, "labels"},
		{PredictRequest{Labels: []string{"a", "a"}, Inputs: []string{"x"}}, "labels[1]"},
		{PredictRequest{Labels: []string{"a", "b"}}, "input"},
	} {
		_, err := c.Predict(testContext(t), tiny, tc.req)
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Field != tc.field {
			t.Errorf("Predict(%+v) error %v, want *InvalidError for %s", tc.req, err, tc.field)
		}
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("invalid predictions reached Ollama (%d requests)", n)
	}
}

func TestPredictBadAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		reply []string
		msg   string
	}{
		{"not JSON", []string{"I think ", "positive"}, "not the JSON that was asked for"},
		{"cut JSON", []string{`{"label":`, `"posi`}, "not the JSON that was asked for"},
		{"label outside the enum", []string{`{"label":"maybe"}`}, "not one of the allowed ones"},
		{"no label", []string{`{}`}, "not one of the allowed ones"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c, tiny, _ := fake(t, "", ollamatest.WithReply(ollamatest.Reply{JSONChunks: tc.reply, PromptEvalCount: 5, EvalCount: 3}))
			res, err := c.Predict(testContext(t), tiny, PredictRequest{Labels: []string{"positive", "negative"}, Inputs: []string{"a", "b"}})
			var up *UpstreamError
			if !errors.As(err, &up) || !strings.Contains(up.Message, tc.msg) {
				t.Errorf("error %v (%T), want *UpstreamError %q", err, err, tc.msg)
			}
			// The first input failed: nothing predicted, its tokens still counted.
			if len(res.Predictions) != 0 || res.Usage != (Usage{5, 3}) {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// When a later input fails, the result keeps the earlier predictions and
// the usage of every input that ran.
func TestPredictFailsMidway(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	srv, c, tiny, _ := fake(t, "", ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 5, EvalCount: 3}),
		ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	go func() {
		// Once the first input is held by its fault, fail the ones after it.
		_ = srv.Wait(testContext(t), func(s ollamatest.Stats) bool { return s.Faulted == 1 })
		srv.SetFault(ollamatest.ErrorAfter(0, "runner died"))
		close(hold)
	}()
	res, err := c.Predict(testContext(t), tiny, PredictRequest{Labels: []string{"yes", "no"}, Inputs: []string{"a", "b", "c"}})
	var up *UpstreamError
	if !errors.As(err, &up) || up.Message != "runner died" {
		t.Errorf("error %v, want the runner's", err)
	}
	if want := (PredictResult{Predictions: []Prediction{{"yes"}}, Usage: Usage{5, 3}}); !reflect.DeepEqual(res, want) {
		t.Errorf("result %+v, want %+v", res, want)
	}
	if n := srv.Stats().Requests; n != 2 {
		t.Errorf("%d requests, want 2 (none after the failure)", n)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	srv, c, _, _ := fake(t, "")
	h, err := c.Ping(testContext(t))
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if reqs := srv.Requests(); len(reqs) != 1 || reqs[0].Method != http.MethodGet || reqs[0].Path != "/api/tags" {
		t.Errorf("Ping sent %+v, want one GET /api/tags", reqs)
	}
	if n := srv.Stats().Requests; n != 1 {
		t.Errorf("Ping sent %d requests, want 1 per backend", n)
	}
	// The fake has "tiny", which both catalog models map to.
	if fmt.Sprint(h.Serving) != "[embedder tiny]" || len(h.Missing) != 0 {
		t.Errorf("health %+v, want both models serving", h)
	}
	f := ollamatest.StatusFault(500, "")
	f.Paths = []string{"/api/tags"}
	srv.SetFault(f)
	var up *UpstreamError
	if _, err := c.Ping(testContext(t)); !errors.As(err, &up) || up.Status != 500 {
		t.Errorf("Ping on a 500: %v (%T), want *UpstreamError 500", err, err)
	}

	// Every backend is checked, and the one that fails is named; the
	// other one serves the model, so it is no error.
	refused := ollamatest.RefusedURL(t)
	cat, err := Parse("two.yaml", []byte(fmt.Sprintf("backends:\n  - url: %s\n  - url: %s\nmodels:\n  m: {ollama: tiny, endpoints: [embed]}\n", srv.URL, refused)))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetFault(ollamatest.Fault{})
	var ue *UnreachableError
	h, err = NewClient(cat).Ping(testContext(t))
	if err != nil || len(h.Down) != 1 || !errors.As(h.Down[0].Err, &ue) || ue.URL != refused || fmt.Sprint(h.Serving) != "[m]" {
		t.Errorf("Ping with the second backend down: %+v, %v; want m serving and *UnreachableError for %s in Down", h, err, refused)
	}
}

// Ping reports the catalog models whose Ollama model is not installed on
// their own backend, matching names as Ollama does (a missing tag is
// ":latest", case does not matter, "library/" is the default namespace),
// with the ollama pull that installs each.
func TestPingMissingModels(t *testing.T) {
	t.Parallel()
	a := ollamatest.NewServer(ollamatest.WithModels("llama3.2:latest", "Qwen2:0.5b", "nomic-embed-text:v1.5"))
	t.Cleanup(a.Close)
	b := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(b.Close)
	cat, err := Parse("two.yaml", []byte(fmt.Sprintf(`backends:
  - {name: a, url: %s}
  - {name: b, url: %s}
models:
  plain:     {ollama: llama3.2, endpoints: [generate]}
  library:   {ollama: library/llama3.2:latest, endpoints: [generate]}
  cased:     {ollama: qwen2:0.5B, endpoints: [generate]}
  wrongtag:  {ollama: llama3.2:3b, endpoints: [generate]}
  untagged:  {ollama: nomic-embed-text, endpoints: [embed]}
  elsewhere: {ollama: tiny, endpoints: [generate]}
  onb:       {ollama: tiny, backend: b, endpoints: [generate]}
  alsoonb:   {ollama: llama3.2, backend: b, endpoints: [generate]}
`, a.URL, b.URL)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewClient(cat).Ping(testContext(t))
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	// elsewhere is served by both backends, and b has it.
	if got := fmt.Sprint(h.Serving); got != "[cased elsewhere library onb plain]" {
		t.Errorf("serving %s, want [cased elsewhere library onb plain]", got)
	}
	var missing []string
	for _, m := range h.Missing {
		missing = append(missing, m.Name+"="+m.Ollama+"@"+m.Backend.Name)
	}
	if got, want := strings.Join(missing, " "), "alsoonb=llama3.2@b untagged=nomic-embed-text@a wrongtag=llama3.2:3b@a"; got != want {
		t.Errorf("missing %s, want %s", got, want)
	}
	want := []string{
		"OLLAMA_HOST=" + b.URL + " ollama pull llama3.2",
		"OLLAMA_HOST=" + a.URL + " ollama pull nomic-embed-text",
		"OLLAMA_HOST=" + a.URL + " ollama pull llama3.2:3b",
	}
	if got := h.Pulls(); !reflect.DeepEqual(got, want) {
		t.Errorf("pulls %q, want %q", got, want)
	}
}

func TestPullCommand(t *testing.T) {
	for url, want := range map[string]string{
		"http://127.0.0.1:11434":  "ollama pull llama3.2",
		"http://localhost:11434":  "ollama pull llama3.2",
		"http://gpu1:11434":       "OLLAMA_HOST=http://gpu1:11434 ollama pull llama3.2",
		"https://ollama.corp:443": "OLLAMA_HOST=https://ollama.corp:443 ollama pull llama3.2",
	} {
		if got := (MissingModel{Ollama: "llama3.2", Backend: Backend{URL: url}}).Pull(); got != want {
			t.Errorf("Pull for %s: %q, want %q", url, got, want)
		}
	}
}

// A model is served by its own backend.
func TestModelBackend(t *testing.T) {
	t.Parallel()
	a := ollamatest.NewServer()
	defer a.Close()
	b := ollamatest.NewServer()
	defer b.Close()
	cat, err := Parse("two.yaml", []byte(fmt.Sprintf(`backends:
  - {name: a, url: %s}
  - {name: b, url: %s}
models:
  on-a: {ollama: x, backend: a, endpoints: [generate]}
  on-b: {ollama: y, backends: [b], endpoints: [generate]}
`, a.URL, b.URL)))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(cat)
	for _, name := range []string{"on-a", "on-b", "on-b"} {
		if _, err := c.Generate(testContext(t), cat.Models[name], GenerateRequest{Prompt: "x"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if na, nb := a.Stats().Requests, b.Stats().Requests; na != 1 || nb != 2 {
		t.Errorf("backend a got %d requests, b got %d; want 1 and 2", na, nb)
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&UpstreamError{Status: 500, Message: "boom"}, "Ollama failed (500): boom"},
		{&UpstreamError{Message: "boom"}, "Ollama failed: boom"},
		{&ModelMissingError{Ollama: "llama3.2:3b"}, `model "llama3.2:3b" is not installed in Ollama; run: ollama pull llama3.2:3b`},
		{&UnknownModelError{Name: "gpt"}, `model "gpt" is not in the catalog (GET /models lists them)`},
		{&InvalidError{Field: "input", Reason: "must not be empty"}, "input: must not be empty"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	if u := (Usage{PromptTokens: 3, CompletionTokens: 4}); u.Total() != 7 || u.Add(Usage{1, 2}) != (Usage{4, 6}) {
		t.Errorf("Usage arithmetic: %+v", u)
	}
}

// An input cut short still bills the pieces Ollama produced for it.
func TestPredictBillsAnInputCutShort(t *testing.T) {
	t.Parallel()
	_, c, tiny, _ := fake(t, "", ollamatest.WithReply(ollamatest.Reply{JSONChunks: []string{`{"label":`, `"yes"`, `}`}, PromptEvalCount: 5, EvalCount: 3}),
		ollamatest.WithFault(ollamatest.CutAfter(2)))
	res, err := c.Predict(testContext(t), tiny, PredictRequest{Labels: []string{"yes", "no"}, Inputs: []string{"a"}})
	var up *UpstreamError
	if !errors.As(err, &up) {
		t.Fatalf("error %v, want a cut stream", err)
	}
	if res.Usage != (Usage{CompletionTokens: 2}) {
		t.Fatalf("usage %+v, want the 2 pieces streamed before the cut", res.Usage)
	}
}
