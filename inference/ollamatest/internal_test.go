package ollamatest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// ---- the encoders produce encoding/json's bytes ----

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	cases := []string{"", "plain", `"\`, "<>&", "\b\f\n\r\t\x00\x01\x1f\x7f", "é日本🙂", "\u2028\u2029",
		"\xff\xfe", "a\xc3", "\xed\xa0\x80", string(rune(0xFFFD))}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s want %s", s, got, want)
		}
		if got := appendJSONString(nil, []byte(s)); !bytes.Equal(got, want) {
			t.Errorf("%q as bytes: got %s want %s", s, got, want)
		}
		if jsonSafe([]byte(s)) && string(want) != `"`+s+`"` {
			t.Errorf("jsonSafe(%q) but it needs escaping", s)
		}
	}
}

func TestAppendFloat32MatchesEncodingJSON(t *testing.T) {
	cases := []float32{0, 1, -1, 0.1, 1e-6, 9.99e-7, 1e-7, -1e-7, 1e20, 1e21, 3.4e38, 1.4e-45, 0.0052971626, -0.00027637408}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		cases = append(cases, math.Float32frombits(rng.Uint32()))
	}
	for _, f := range cases {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		want, _ := json.Marshal(f)
		if got := appendFloat32(nil, f); !bytes.Equal(got, want) {
			t.Errorf("%v: got %s want %s", f, got, want)
		}
	}
}

// ---- the fast parser agrees with the full decode ----

var parseCorpus = []string{
	``, ` `, `null`, `[]`, `"x"`, `5`, `{`, `{"model":`, `{}`, `{"model":"tiny"} trailing`,
	`{"model":"tiny","prompt":"why is the sky blue"}`,
	`{"model":"tiny","prompt":"hi","stream":false,"raw":true,"format":"json","keep_alive":"5m","options":{"num_predict":5,"temperature":0.7}}`,
	`{"model":"tiny","prompt":"","keep_alive":0}`,
	`{"model":"tiny","keep_alive":"0.5s"}`, `{"model":"tiny","keep_alive":-1}`, `{"model":"tiny","keep_alive":-0}`,
	`{"model":"tiny","keep_alive":0.9}`, `{"model":"tiny","keep_alive":1e3}`, `{"model":"tiny","keep_alive":"-5m"}`,
	`{"model":"tiny","keep_alive":"abc"}`, `{"model":"tiny","keep_alive":true}`, `{"model":"tiny","keep_alive":"\u0030"}`,
	`{"model":"tiny","stream":null}`, `{"model":"tiny","stream":true,"stream":false}`, `{"model":"tiny","stream":"no"}`,
	`{"model":5}`, `{"model":null}`, `{"model":"t\u0069ny"}`, `{"Model":"tiny"}`, `{"MODEL":"tiny","model":"x"}`,
	`{"model":"a<b>&c\u2028"}`, "{\"model\":\"\xff\"}", `{"modeL":"x"}`, `{"ſtream":false}`,
	`{"model":"m","options":null}`, `{"model":"m","options":[]}`, `{"model":"m","options":{"num_predict":"a"}}`,
	`{"model":"m","options":{"num_predict":null}}`, `{"model":"m","options":{"num_predict":2.9}}`,
	`{"model":"m","options":{"num_predict":-3}}`, `{"model":"m","options":{"num_predict":1e400}}`,
	`{"model":"m","options":{"num_predict":1e3}}`, `{"model":"m","options":{"num_predict":true}}`,
	`{"model":"m","options":{"num_predict":3},"options":{"top_k":1}}`, `{"model":"m","options":{"num_predict":3},"options":null}`,
	`{"model":"m","options":{"NUM_PREDICT":3}}`, `{"model":"m","options":{"num_predict":12345678901234567890}}`,
	`{"model":"m","format":null}`, `{"model":"m","format":""}`, `{"model":"m","format":{"type":"object"}}`, `{"model":"m","format":[1]}`,
	`{"model":"m","system":"a b","prompt":"c d e","template":"t"}`, `{"model":"m","raw":true,"template":"t","prompt":"x"}`,
	`{"model":"m","raw":true,"context":[1,2],"prompt":"x"}`, `{"model":"m","context":null}`, `{"model":"m","context":["x"]}`,
	`{"model":"m","images":["aGk="]}`, `{"model":"m","images":["!!"]}`, `{"model":"m","prompt":5}`, `{"model":"m","suffix":3}`,
	`{"model":"m","think":true}`, `{"model":"m","think":"yes"}`, `{"model":"m","raw":"yes"}`,
	`{"model":"m","prompt":"tab\there\nnew\u00a0nbsp \ud83d\ude00 x"}`, `{"model":"m","prompt":"\\n"}`, `{"model":"m","prompt":"\ud800 lone"}`,
	`{"model":"m","messages":[{"role":"user","content":"hello there"},{"role":"ASSISTANT","content":"hi"}]}`,
	`{"model":"m","messages":[]}`, `{"model":"m","messages":null}`, `{"model":"m","messages":[null]}`, `{"model":"m","messages":["x"]}`,
	`{"model":"m","messages":[{"content":5}]}`, `{"model":"m","messages":[{"role":"user","content":"x","images":["aGk="]}]}`,
	`{"model":"m","messages":[{"role":"user","content":"x","tool_calls":null,"Content":"y"}]}`,
	`{"model":"m","messages":[{"role":"user","content":"a b"}],"messages":[{"content":"c"}]}`,
	`{"model":"m","tools":[{"type":"function"}]}`, `{"model":"m","tools":null}`,
	`{"model":"m","input":"hello world"}`, `{"model":"m","input":""}`, `{"model":"m","input":["a b","c",""]}`,
	`{"model":"m","input":[]}`, `{"model":"m","input":null}`, `{"model":"m","input":5}`, `{"model":"m","input":["a",5]}`,
	`{"model":"m","input":{"a":1}}`, `{"model":"m","input":"\u00e9t\u00e9"}`, `{"model":"m","input":["x"],"input":"y"}`,
	`{"options":{"":1e700}}`, `{"options":{"a":[{"b":"1e999","c":-1E-999}],"d":2e308}}`, `{"model":"m","input":[1e999]}`,
	`{"model":"m","input":{"x":[1e999]}}`, `{"model":"m","input":1e999}`, `{"model":"m","options":{"x":1.5e3}}`,
	`{"model":"m","truncate":false}`, `{"model":"m","truncate":1}`,
	` { "model" : "m" , "prompt" : "x" , "extra" : { "nested" : [ 1 , { "a" : "}" } ] } } `,
}

func TestWalkAgreesWithFullDecode(t *testing.T) {
	for _, ep := range []endpoint{epGenerate, epChat, epEmbed} {
		for _, body := range parseCorpus {
			checkWalk(t, ep, []byte(body))
		}
	}
}

func checkWalk(t *testing.T, ep endpoint, body []byte) {
	t.Helper()
	full, fullErr := decodeFull(ep, body)
	fast, ok := walk(ep, body)
	if !ok {
		return // the full decode decides; nothing to compare
	}
	if fullErr != "" {
		t.Errorf("ep %d %s: walk accepted what Ollama rejects with %q", ep, body, fullErr)
		return
	}
	norm := func(p parsed) parsed {
		if len(p.model) == 0 {
			p.model = nil
		}
		var inputs [][]byte
		p.eachInput(func(_ int, text []byte) { inputs = append(inputs, text) })
		p.inputs, p.inputRaw = inputs, nil
		return p
	}
	if f, w := norm(fast), norm(full); !reflect.DeepEqual(f, w) {
		t.Errorf("ep %d %s:\n walk %+v\n full %+v", ep, body, f, w)
	}
	got, errMsg := parseBody(ep, body)
	if errMsg != "" || !reflect.DeepEqual(norm(got), norm(fast)) {
		t.Errorf("parseBody disagrees with walk")
	}
}

func FuzzWalk(f *testing.F) {
	for _, s := range parseCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, ep := range []endpoint{epGenerate, epChat, epEmbed} {
			checkWalk(t, ep, []byte(body))
		}
	})
}

func TestCountRawWordsDecodesEscapes(t *testing.T) {
	for _, s := range []string{"", "a", " a  b ", "a\tb\nc\rd\fe\vf", "x\u00a0y\u2003z", "\\n", "😀 \xed\xa0\xbd", "a\u0085b", `"quoted" \ slash /`} {
		raw, _ := json.Marshal(s)
		raw = raw[1 : len(raw)-1]
		if got, want := countRawWords(raw), countWords(s); got != want {
			t.Errorf("%q (raw %s): %d words, want %d", s, raw, got, want)
		}
		if got, want := countWords(s), len(strings.Fields(s)); got != want {
			t.Errorf("countWords(%q) = %d, strings.Fields says %d", s, got, want)
		}
	}
	// escapes that encoding/json never writes
	for raw, want := range map[string]int{`a\u0020b`: 2, `\u00A0x`: 1, `\/`: 1, `\ud83d\ude00 x`: 2} {
		if got := countRawWords([]byte(raw)); got != want {
			t.Errorf("countRawWords(%s) = %d, want %d", raw, got, want)
		}
	}
}

func TestModelMatches(t *testing.T) {
	for _, c := range []struct {
		req, known string
		want       bool
	}{
		{"tiny", "tiny:latest", true}, {"TINY", "tiny:latest", true}, {"tiny:latest", "tiny:latest", true},
		{"tiny:LATEST", "tiny:latest", true}, {"tiny:7b", "tiny:latest", false}, {"tin", "tiny:latest", false},
		{"ns/tiny", "ns/tiny:latest", true}, {"ns:1/tiny", "ns:1/tiny:latest", true}, {"", "tiny:latest", false},
	} {
		if got := modelMatches([]byte(c.req), []byte(c.known)); got != c.want {
			t.Errorf("modelMatches(%q, %q) = %v", c.req, c.known, got)
		}
	}
}

func TestDocumentForIsValidJSON(t *testing.T) {
	for _, schema := range []string{
		`{}`, `{"type":"object"}`, `{"$ref":"#"}`, `{"$ref":"#/nope"}`, `{"type":"array","maxItems":0}`,
		`{"properties":{"a":{"$ref":"#"}}}`, `{"type":"number","exclusiveMinimum":0.5}`, `{"type":{}}`, `{"enum":[]}`,
	} {
		doc := strings.Join(documentFor([]byte(schema)), "")
		if !json.Valid([]byte(doc)) {
			t.Errorf("schema %s: %q is not JSON", schema, doc)
		}
	}
}

// ---- the handler's own cost ----

// discardWriter is a minimal streaming ResponseWriter.
type discardWriter struct {
	h      http.Header
	n      int
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *discardWriter) FlushError() error           { return nil }

type rewindReader struct{ *bytes.Reader }

func (rewindReader) Close() error { return nil }

// BenchmarkServeHTTP measures the fake's handler alone, without network or
// HTTP client: what it adds to each request of a load test.
func BenchmarkServeHTTP(b *testing.B) {
	for _, c := range []struct{ name, path, body string }{
		{"generate-stream", "/api/generate", `{"model":"tiny","prompt":"why is the sky blue","options":{"num_predict":128,"temperature":0.7},"keep_alive":"5m"}`},
		{"generate-single", "/api/generate", `{"model":"tiny","prompt":"why is the sky blue","stream":false}`},
		{"chat-stream", "/api/chat", `{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}`},
		{"predict-schema", "/api/chat", `{"model":"tiny","stream":false,"messages":[{"role":"user","content":"great!"}],"format":{"type":"object","properties":{"label":{"type":"string","enum":["positive","negative"]}}}}`},
		{"embed", "/api/embed", `{"model":"tiny","input":["hello world","bye"]}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := &Server{closing: make(chan struct{}), models: [][]byte{[]byte("tiny:latest")}}
			s.SetReply(Reply{})
			body := bytes.NewReader([]byte(c.body))
			r := httptest.NewRequestWithContext(context.Background(), http.MethodPost, c.path, nil)
			r.Body = rewindReader{body}
			r.ContentLength = int64(body.Len())
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = body.Seek(0, io.SeekStart)
				clear(w.h)
				s.serveHTTP(w, r)
			}
			if w.status != 0 && w.status != 200 {
				b.Fatalf("status %d", w.status)
			}
		})
	}
}

func TestServeHTTPAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	s := &Server{closing: make(chan struct{}), anyModel: true}
	s.SetReply(Reply{})
	body := bytes.NewReader([]byte(`{"model":"tiny","prompt":"why is the sky blue","options":{"num_predict":128}}`))
	r := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/api/generate", nil)
	r.Body = rewindReader{body}
	w := &discardWriter{h: http.Header{}}
	allocs := testing.AllocsPerRun(200, func() {
		_, _ = body.Seek(0, io.SeekStart)
		s.serveHTTP(w, r)
	})
	if allocs > 0 {
		t.Errorf("a streamed generate costs the handler %v allocations, want 0", allocs)
	}
}
