package handlers_test

// The OpenAI-compatible surface, tested with OpenAI's official Go SDK
// against the real server: what the SDK decodes is what clients get.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"tollgate/auth"
	"tollgate/inference/ollamatest"
	"tollgate/internal/tinymodel"
	"tollgate/metering"
)

// oaClient is the SDK pointed at ts with key. It counts the HTTP attempts
// it makes (retries included) in attempts and keeps the last response.
type oaClient struct {
	openai.Client
	attempts atomic.Int32
	last     atomic.Pointer[http.Response]
}

func newOAClient(ts *testServer, key string, opts ...option.RequestOption) *oaClient {
	c := &oaClient{}
	base := []option.RequestOption{option.WithBaseURL(ts.URL + "/v1/"), option.WithAPIKey(key), option.WithHTTPClient(ts.client),
		option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			c.attempts.Add(1)
			resp, err := next(req)
			if resp != nil {
				c.last.Store(resp)
			}
			return resp, err
		})}
	c.Client = openai.NewClient(append(base, opts...)...)
	return c
}

// oaError requires err to be the SDK's *openai.Error with status and code.
func oaError(t *testing.T, err error, status int, code string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *openai.Error", err, err)
	}
	if e.StatusCode != status || e.Code != code {
		t.Errorf("status %d code %q (type %q, message %q), want %d %q", e.StatusCode, e.Code, e.Type, e.Message, status, code)
	}
	return e
}

// oneRow requires key id to have exactly n usage rows, all with surface
// openai, and returns the last.
func oneRowEach(t *testing.T, ts *testServer, id string, n int) metering.Event {
	t.Helper()
	var rows []metering.Event
	waitFor(t, "the usage rows", func() bool { rows = ts.usageRows(t, id); return len(rows) >= n })
	if len(rows) != n {
		t.Fatalf("%d usage rows, want %d: %+v", len(rows), n, rows)
	}
	for _, r := range rows {
		if r.Surface != metering.SurfaceOpenAI {
			t.Errorf("usage row %s has surface %q, want openai", r.RequestID, r.Surface)
		}
	}
	return rows[n-1]
}

func checkUsageRow(t *testing.T, row metering.Event, prompt, completion int64) {
	t.Helper()
	if row.PromptTokens != prompt || row.CompletionTokens != completion || row.Status != 200 {
		t.Errorf("usage row %+v, want %d prompt and %d completion tokens, status 200", row, prompt, completion)
	}
}

func userMsg(s string) []openai.ChatCompletionMessageParamUnion {
	return []openai.ChatCompletionMessageParamUnion{openai.UserMessage(s)}
}

func TestOpenAIRealChat(t *testing.T) {
	ts := newRealServer(t)
	id, key := ts.newKey(t, auth.Spec{})
	c := newOAClient(ts, key)
	got, err := c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: "tiny", Messages: userMsg("hi"), Temperature: openai.Float(0), User: openai.String("someone")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != tinymodel.GreedyReply || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("choices %+v, want one %q with finish_reason stop", got.Choices, tinymodel.GreedyReply)
	}
	reqID := c.last.Load().Header.Get("X-Request-ID")
	if got.ID != "chatcmpl-"+reqID || got.Object != "chat.completion" || got.Model != "tiny" || got.Created == 0 {
		t.Errorf("id %q object %q model %q created %d; want chatcmpl-%s, chat.completion, tiny, a time", got.ID, got.Object, got.Model, got.Created, reqID)
	}
	row := oneRowEach(t, ts, id, 1)
	checkUsageRow(t, row, got.Usage.PromptTokens, got.Usage.CompletionTokens)
	if got.Usage.CompletionTokens != int64(len(tinymodel.GreedyReply)+1) || got.Usage.TotalTokens != got.Usage.PromptTokens+got.Usage.CompletionTokens {
		t.Errorf("usage %+v", got.Usage)
	}
}

func TestOpenAIRealChatStream(t *testing.T) {
	ts := newRealServer(t)
	id, key := ts.newKey(t, auth.Spec{})
	c := newOAClient(ts, key)
	stream := c.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model: "tiny", Messages: userMsg("hi"), Temperature: openai.Float(0),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var (
		acc    openai.ChatCompletionAccumulator
		chunks []openai.ChatCompletionChunk
	)
	for stream.Next() {
		chunks = append(chunks, stream.Current())
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 4 {
		t.Fatalf("%d chunks, want pieces, a finish and a usage chunk: %+v", len(chunks), chunks)
	}
	if chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Errorf("first chunk %+v has no role", chunks[0])
	}
	last := chunks[len(chunks)-1]
	if len(last.Choices) != 0 || last.Usage.TotalTokens == 0 {
		t.Errorf("last chunk %s: want no choices and the usage", last.RawJSON())
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != tinymodel.GreedyReply || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("accumulated %+v, want %q, stop", acc.Choices, tinymodel.GreedyReply)
	}
	row := oneRowEach(t, ts, id, 1)
	checkUsageRow(t, row, last.Usage.PromptTokens, last.Usage.CompletionTokens)
}

func TestOpenAIRealCompletions(t *testing.T) {
	ts := newRealServer(t)
	id, key := ts.newKey(t, auth.Spec{})
	c := newOAClient(ts, key)
	params := openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")},
		Temperature: openai.Float(0), MaxTokens: openai.Int(32)}
	got, err := c.Completions.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Text != tinymodel.GreedyReply || got.Choices[0].FinishReason != "stop" || got.Object != "text_completion" {
		t.Fatalf("got %s", got.RawJSON())
	}
	checkUsageRow(t, oneRowEach(t, ts, id, 1), got.Usage.PromptTokens, got.Usage.CompletionTokens)

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Completions.NewStreaming(t.Context(), params)
	var (
		text   string
		usage  openai.CompletionUsage
		finish string
	)
	for stream.Next() {
		ch := stream.Current()
		for _, choice := range ch.Choices {
			text += choice.Text
			if choice.FinishReason != "" {
				finish = string(choice.FinishReason)
			}
		}
		if len(ch.Choices) == 0 {
			usage = ch.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text != tinymodel.GreedyReply || finish != "stop" || usage.TotalTokens != got.Usage.TotalTokens || usage.PromptTokens != got.Usage.PromptTokens {
		t.Errorf("streamed %q finish %q usage %+v; want %q, stop, %+v", text, finish, usage, tinymodel.GreedyReply, got.Usage)
	}
	checkUsageRow(t, oneRowEach(t, ts, id, 2), usage.PromptTokens, usage.CompletionTokens)
}

// decodeBase64 decodes an embedding sent as base64 little-endian float32s.
func decodeBase64(t *testing.T, s string) []float64 {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		t.Fatalf("embedding %q is not base64 float32s: %v", s, err)
	}
	out := make([]float64, len(b)/4)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return out
}

func TestOpenAIEmbeddings(t *testing.T) {
	_, ts := newFakeServer(t, "5s")
	id, key := ts.newKey(t, auth.Spec{})
	c := newOAClient(ts, key)
	params := openai.EmbeddingNewParams{Model: "embedder", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b", "c"}},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat}
	floats, err := c.Embeddings.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(floats.Data) != 2 || len(floats.Data[0].Embedding) != ollamatest.DefaultEmbeddingDim || floats.Model != "embedder" || floats.Object != "list" {
		t.Fatalf("got %s", floats.RawJSON())
	}
	if floats.Usage.PromptTokens != 3 || floats.Usage.TotalTokens != 3 {
		t.Errorf("usage %+v, want 3 prompt tokens (the fake counts words)", floats.Usage)
	}

	// The Go SDK leaves a base64 embedding undecoded (openai-node decodes
	// it); it must decode to the very vectors sent as floats.
	params.EncodingFormat = openai.EmbeddingNewParamsEncodingFormatBase64
	b64, err := c.Embeddings.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Data []struct {
			Index     int    `json:"index"`
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(b64.RawJSON()), &raw); err != nil || len(raw.Data) != 2 {
		t.Fatalf("base64 answer %s: %v", b64.RawJSON(), err)
	}
	for i, d := range raw.Data {
		got, want := decodeBase64(t, d.Embedding), floats.Data[i].Embedding
		if d.Index != i || len(got) != len(want) {
			t.Fatalf("data[%d]: index %d, %d values; want %d", i, d.Index, len(got), len(want))
		}
		for j := range got {
			if float32(got[j]) != float32(want[j]) {
				t.Errorf("data[%d][%d] = %v as base64, %v as float", i, j, got[j], want[j])
			}
		}
	}
	oneRowEach(t, ts, id, 2)

	// Token arrays and dimensions: 400 naming the param, no usage row.
	_, err = c.Embeddings.New(t.Context(), openai.EmbeddingNewParams{Model: "embedder", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: []int64{1, 2}}})
	if e := oaError(t, err, 400, "invalid_request"); e.Param != "input" {
		t.Errorf("param %q, want input", e.Param)
	}
	_, err = c.Embeddings.New(t.Context(), openai.EmbeddingNewParams{Model: "embedder", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("a")}, Dimensions: openai.Int(4)})
	if e := oaError(t, err, 400, "invalid_request"); e.Param != "dimensions" {
		t.Errorf("param %q, want dimensions", e.Param)
	}
	// The embed scope is the gateway's to check.
	_, genOnly := ts.newKey(t, auth.Spec{Scopes: []auth.Scope{auth.ScopeGenerate}})
	_, err = newOAClient(ts, genOnly).Embeddings.New(t.Context(), params)
	if e := oaError(t, err, 403, "insufficient_scope"); e.Type != "permission_error" {
		t.Errorf("type %q, want permission_error", e.Type)
	}
	oneRowEach(t, ts, id, 2)
}

func TestOpenAIModels(t *testing.T) {
	_, ts := newFakeServer(t, "5s")
	c := newOAClient(ts, ts.key)
	page, err := c.Models.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "tollgate" || m.Created != 0 {
			t.Errorf("model %s", m.RawJSON())
		}
	}
	if strings.Join(ids, ",") != "chat,embedder" {
		t.Errorf("models %v, want chat, embedder", ids)
	}
	m, err := c.Models.Get(t.Context(), "chat")
	if err != nil || m.ID != "chat" {
		t.Fatalf("get chat: %+v, %v", m, err)
	}
	_, err = c.Models.Get(t.Context(), "llama3.2:3b") // Ollama's name is not public
	oaError(t, err, 404, "model_not_found")

	_, chatOnly := ts.newKey(t, auth.Spec{Models: []string{"chat"}})
	c = newOAClient(ts, chatOnly)
	page, err = c.Models.List(t.Context())
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != "chat" {
		t.Fatalf("a chat-only key lists %+v, %v", page, err)
	}
	_, err = c.Models.Get(t.Context(), "embedder")
	oaError(t, err, 404, "model_not_found")
}

func TestOpenAIErrors(t *testing.T) {
	_, ts := newFakeServer(t, "5s")
	chat := openai.ChatCompletionNewParams{Model: "chat", Messages: userMsg("hi")}

	t.Run("401", func(t *testing.T) {
		c := newOAClient(ts, "tg_not_a_key")
		_, err := c.Chat.Completions.New(t.Context(), chat)
		oaError(t, err, 401, "invalid_api_key")
		if n := c.attempts.Load(); n != 1 {
			t.Errorf("%d attempts, want 1", n)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		_, key := ts.newKey(t, auth.Spec{Limits: auth.Limits{RequestsPerSecond: 0.001, Burst: 1}})
		c := newOAClient(ts, key, option.WithMaxRetries(0))
		if _, err := c.Chat.Completions.New(t.Context(), chat); err != nil {
			t.Fatal(err)
		}
		_, err := c.Chat.Completions.New(t.Context(), chat)
		e := oaError(t, err, 429, "rate_limit_exceeded")
		if e.Type != "requests" || c.last.Load().Header.Get("Retry-After") == "" {
			t.Errorf("type %q, Retry-After %q: want requests and a delay", e.Type, c.last.Load().Header.Get("Retry-After"))
		}
		if c.last.Load().Header.Get("x-ratelimit-remaining-requests") != "0" {
			t.Errorf("x-ratelimit-remaining-requests %q, want 0", c.last.Load().Header.Get("x-ratelimit-remaining-requests"))
		}
	})
	t.Run("quota", func(t *testing.T) {
		id, key := ts.newKey(t, auth.Spec{Limits: auth.Limits{MonthlyRequests: 1}})
		c := newOAClient(ts, key) // the SDK's default: two retries of a 429
		if _, err := c.Chat.Completions.New(t.Context(), chat); err != nil {
			t.Fatal(err)
		}
		c.attempts.Store(0)
		_, err := c.Chat.Completions.New(t.Context(), chat)
		if e := oaError(t, err, 429, "insufficient_quota"); e.Type != "insufficient_quota" {
			t.Errorf("type %q, want insufficient_quota", e.Type)
		}
		if n, h := c.attempts.Load(), c.last.Load().Header.Get("x-should-retry"); n != 1 || h != "false" {
			t.Errorf("%d attempts, x-should-retry %q: want 1 and false (a spent quota is not retried)", n, h)
		}
		oneRowEach(t, ts, id, 1)
	})
	t.Run("unsupported params", func(t *testing.T) {
		id, key := ts.newKey(t, auth.Spec{})
		c := newOAClient(ts, key)
		for _, tc := range []struct {
			name, param string
			edit        func(*openai.ChatCompletionNewParams)
			opts        []option.RequestOption
		}{
			{"n=2", "n", func(p *openai.ChatCompletionNewParams) { p.N = openai.Int(2) }, nil},
			{"logprobs", "logprobs", func(p *openai.ChatCompletionNewParams) { p.Logprobs = openai.Bool(true) }, nil},
			{"top_logprobs", "top_logprobs", func(p *openai.ChatCompletionNewParams) { p.TopLogprobs = openai.Int(2) }, nil},
			{"logit_bias", "logit_bias", func(p *openai.ChatCompletionNewParams) { p.LogitBias = map[string]int64{"1": 5} }, nil},
			{"tool_choice required", "tool_choice", func(p *openai.ChatCompletionNewParams) {
				p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
			}, nil},
			{"unknown field", "frobnicate", func(*openai.ChatCompletionNewParams) {}, []option.RequestOption{option.WithJSONSet("frobnicate", 1)}},
			{"temperature out of range", "temperature", func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(-1) }, nil},
			{"max_tokens", "max_tokens", func(p *openai.ChatCompletionNewParams) { p.MaxTokens = openai.Int(0) }, nil},
			{"image part", "messages[0].content[0].type", func(p *openai.ChatCompletionNewParams) {
				p.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
					openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/a.png"})})}
			}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := chat
				tc.edit(&p)
				_, err := c.Chat.Completions.New(t.Context(), p, tc.opts...)
				e := oaError(t, err, 400, "invalid_request")
				if e.Param != tc.param || e.Type != "invalid_request_error" {
					t.Errorf("param %q type %q (message %q), want %q invalid_request_error", e.Param, e.Type, e.Message, tc.param)
				}
			})
		}
		if rows := ts.usageRows(t, id); len(rows) != 0 {
			t.Errorf("refused requests left usage rows: %+v", rows)
		}
	})
	t.Run("error after the stream began", func(t *testing.T) {
		fake, ts := newFakeServer(t, "5s")
		fake.SetFault(ollamatest.ErrorAfter(2, "model crashed"))
		c := newOAClient(ts, ts.key)
		stream := c.Chat.Completions.NewStreaming(t.Context(), chat)
		n := 0
		for stream.Next() {
			n++
		}
		if err := stream.Err(); err == nil || n != 2 || !strings.Contains(err.Error(), "backend_error") {
			t.Errorf("after %d chunks: error %v, want 2 chunks then the error event", n, err)
		}
	})
}

func TestOpenAIToolCalls(t *testing.T) {
	weather := api.ToolCall{Function: api.ToolCallFunction{Name: "get_weather", Arguments: api.ToolCallFunctionArguments{"city": "Paris"}}}
	fake, ts := newFakeServer(t, "5s", ollamatest.WithReply(ollamatest.Reply{Chunks: []string{}, ToolCalls: []api.ToolCall{weather}}))
	id, key := ts.newKey(t, auth.Spec{})
	c := newOAClient(ts, key)
	params := openai.ChatCompletionNewParams{Model: "chat", Messages: userMsg("weather in Paris?"),
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "get_weather", Description: openai.String("The weather in a city"),
			Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
		})}}

	checkCall := func(t *testing.T, calls []openai.ChatCompletionMessageToolCallUnion) openai.ChatCompletionMessageToolCallUnion {
		t.Helper()
		if len(calls) != 1 {
			t.Fatalf("tool calls %+v, want one", calls)
		}
		var args map[string]any
		if err := json.Unmarshal([]byte(calls[0].Function.Arguments), &args); err != nil || args["city"] != "Paris" {
			t.Errorf("arguments %q (%v), want {\"city\":\"Paris\"}", calls[0].Function.Arguments, err)
		}
		if calls[0].Function.Name != "get_weather" || calls[0].Type != "function" || !strings.HasPrefix(calls[0].ID, "call_") {
			t.Errorf("tool call %s", calls[0].RawJSON())
		}
		return calls[0]
	}

	got, err := c.Chat.Completions.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("finish_reason %q, want tool_calls", got.Choices[0].FinishReason)
	}
	call := checkCall(t, got.Choices[0].Message.ToolCalls)
	sent := lastRequest(t, fake)
	if !strings.Contains(string(sent.Body), `"get_weather"`) {
		t.Errorf("Ollama was not given the tool: %s", sent.Body)
	}

	t.Run("streamed", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(t.Context(), params)
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		checkCall(t, acc.Choices[0].Message.ToolCalls)
		if acc.Choices[0].FinishReason != "tool_calls" {
			t.Errorf("finish_reason %q, want tool_calls", acc.Choices[0].FinishReason)
		}
	})

	t.Run("the result goes back under the tool's name", func(t *testing.T) {
		fake.SetReply(ollamatest.Reply{Chunks: []string{"Sunny"}})
		p := params
		p.Messages = append(userMsg("weather in Paris?"), got.Choices[0].Message.ToParam(),
			openai.ToolMessage([]openai.ChatCompletionContentPartTextParam{{Text: "sunny, "}, {Text: "21C"}}, call.ID))
		res, err := c.Chat.Completions.New(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if res.Choices[0].Message.Content != "Sunny" || res.Choices[0].FinishReason != "stop" {
			t.Errorf("answer %s", res.RawJSON())
		}
		msgs := lastRequest(t, fake).Messages
		if len(msgs) != 3 || msgs[1].Role != "assistant" || len(msgs[1].ToolCalls) != 1 || msgs[1].ToolCalls[0].Function.Arguments["city"] != "Paris" ||
			msgs[2].Role != "tool" || msgs[2].ToolName != "get_weather" || msgs[2].Content != "sunny, 21C" {
			t.Errorf("Ollama got %+v", msgs)
		}

		p.Messages[2] = openai.ToolMessage("x", "call_unknown")
		_, err = c.Chat.Completions.New(t.Context(), p)
		if e := oaError(t, err, 400, "invalid_request"); e.Param != "messages[2].tool_call_id" {
			t.Errorf("param %q, want messages[2].tool_call_id", e.Param)
		}
	})

	t.Run("tool_choice none sends no tools", func(t *testing.T) {
		p := params
		p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")}
		if _, err := c.Chat.Completions.New(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		if body := lastRequest(t, fake).Body; strings.Contains(string(body), "get_weather") {
			t.Errorf("Ollama was given the tools: %s", body)
		}
	})
	oneRowEach(t, ts, id, 4)
}

// TestOpenAIOptions: OpenAI's sampling fields reach Ollama as its options,
// response_format as its format, and a cut answer says "length".
func TestOpenAIOptions(t *testing.T) {
	fake, ts := newFakeServer(t, "5s")
	c := newOAClient(ts, ts.key)
	got, err := c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{Model: "chat", Messages: userMsg("hi"),
		MaxCompletionTokens: openai.Int(2), Temperature: openai.Float(0.5), TopP: openai.Float(0.9), Seed: openai.Int(7),
		PresencePenalty: openai.Float(0.1), FrequencyPenalty: openai.Float(0.2),
		Stop:           openai.ChatCompletionNewParamsStopUnion{OfString: openai.String("END")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &openai.ResponseFormatJSONObjectParam{}}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].FinishReason != "length" {
		t.Errorf("finish_reason %q, want length", got.Choices[0].FinishReason)
	}
	sent := lastRequest(t, fake)
	want := map[string]any{"num_predict": 2.0, "temperature": 0.5, "top_p": 0.9, "seed": 7.0, "presence_penalty": 0.1, "frequency_penalty": 0.2}
	for k, v := range want {
		if sent.Options[k] != v {
			t.Errorf("options.%s = %v, want %v", k, sent.Options[k], v)
		}
	}
	if stop, _ := sent.Options["stop"].([]any); len(stop) != 1 || stop[0] != "END" {
		t.Errorf("options.stop = %v, want [END]", sent.Options["stop"])
	}
	if string(sent.Format) != `"json"` {
		t.Errorf("format %s, want \"json\"", sent.Format)
	}

	schema := map[string]any{"type": "object", "properties": map[string]any{"a": map[string]any{"type": "string"}}}
	_, err = c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{Model: "chat", Messages: []openai.ChatCompletionMessageParamUnion{
		openai.DeveloperMessage("be brief"), openai.UserMessage("hi")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &openai.ResponseFormatJSONSchemaParam{
			JSONSchema: openai.ResponseFormatJSONSchemaJSONSchemaParam{Name: "x", Schema: schema}}}})
	if err != nil {
		t.Fatal(err)
	}
	sent = lastRequest(t, fake)
	var format map[string]any
	if json.Unmarshal(sent.Format, &format) != nil || format["type"] != "object" {
		t.Errorf("format %s, want the schema", sent.Format)
	}
	if len(sent.Messages) != 2 || sent.Messages[0].Role != "system" || sent.Messages[0].Content != "be brief" {
		t.Errorf("messages %+v: want the developer message as a system one", sent.Messages)
	}
}

// TestOpenAINotFound: an unknown /v1 route answers in OpenAI's shape.
func TestOpenAINotFound(t *testing.T) {
	_, ts := newFakeServer(t, "5s")
	c := newOAClient(ts, ts.key)
	err := c.Post(context.Background(), "assistants", map[string]any{}, nil)
	oaError(t, err, 404, "not_found")
}
