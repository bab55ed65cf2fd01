package ollamatest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"sync"

	"github.com/ollama/ollama/api"
)

// DefaultChunks is the text a Server streams when its Reply sets no Chunks:
// three chunks that read "Hello, world". It is read when a Reply is set;
// do not modify it.
var DefaultChunks = []string{"Hello", ",", " world"}

// DefaultEmbeddingDim is the length of the embeddings a Server returns when
// its Reply sets no EmbeddingDim.
const DefaultEmbeddingDim = 8

// Reply is what a Server answers to requests that succeed. The zero Reply is
// the default: DefaultChunks, counts derived from the request, vectors of
// DefaultEmbeddingDim.
//
// A Reply is a plain value, copied by WithReply and SetReply: changing the
// slices it refers to afterwards has no effect on the server.
type Reply struct {
	// Chunks is the generated text, one chunk per streamed line ("response"
	// of /api/generate, "message.content" of /api/chat); the single object of
	// a stream:false request carries their concatenation. Each chunk counts
	// as one token: options.num_predict = n stops the reply after n chunks
	// with done_reason "length" (when n <= len(Chunks), as a real model hits
	// the limit before it can emit its end token). nil means DefaultChunks;
	// an empty, non-nil slice means no text at all.
	Chunks []string

	// JSONChunks, when non-nil, is the text streamed to requests that carry
	// a "format" ("json" or a JSON schema), in place of the document the
	// server derives from the schema. Use it to make the "model" answer
	// outside the schema, or with broken JSON.
	//
	// Without it, a schema gets the smallest document the server can build
	// that satisfies it: the first value of every "enum", "const" values,
	// every property of an object, "" for strings, 0 for numbers, false,
	// null, arrays of max(minItems, 1) items; "json" gets {}. The document
	// is streamed one JSON token per chunk. A format that is neither "json"
	// nor an object gets Ollama's error ("invalid format: ...").
	JSONChunks []string

	// PromptEvalCount, when > 0, is the prompt_eval_count reported by every
	// generate, chat and embed reply. Otherwise it is derived from the
	// request: the number of whitespace-separated words in system + prompt
	// (generate) or in all message contents (chat), at least 1; for embed,
	// the words of all inputs.
	PromptEvalCount int

	// EvalCount, when > 0, is the eval_count reported by every generate and
	// chat reply. Otherwise it is the number of chunks sent.
	EvalCount int

	// DoneReason, when non-empty, replaces the done_reason the server would
	// report ("stop", or "length" when num_predict cut the reply short).
	DoneReason string

	// EmbeddingDim is the length of every embedding; 0 means
	// DefaultEmbeddingDim. Embeddings are unit vectors that depend only on
	// the input text, so equal inputs get equal vectors.
	EmbeddingDim int

	// ToolCalls, when non-empty, are the tool calls every chat reply makes:
	// they go in message.tool_calls of the final object (done: true), after
	// the text chunks, whether or not the request declared tools.
	ToolCalls []api.ToolCall
}

// replyState is a Reply prepared for the hot path.
type replyState struct {
	chunks     []chunk
	jsonChunks []chunk // nil: derive from the format
	promptEval int
	evalCount  int
	doneReason string
	dim        int
	toolCalls  []byte // the JSON array of Reply.ToolCalls; nil: none
}

// chunk is one piece of generated text, kept both as text (for the
// concatenated stream:false answer) and JSON-encoded (for stream lines).
type chunk struct {
	text string
	enc  []byte // appendJSONString(text)
}

func makeChunks(texts []string) []chunk {
	cs := make([]chunk, len(texts))
	for i, t := range texts {
		cs[i] = chunk{text: t, enc: appendJSONString(nil, t)}
	}
	return cs
}

func newReplyState(r Reply) *replyState {
	st := &replyState{
		promptEval: r.PromptEvalCount,
		evalCount:  r.EvalCount,
		doneReason: r.DoneReason,
		dim:        r.EmbeddingDim,
	}
	if r.Chunks == nil {
		st.chunks = makeChunks(DefaultChunks)
	} else {
		st.chunks = makeChunks(r.Chunks)
	}
	if r.JSONChunks != nil {
		st.jsonChunks = makeChunks(r.JSONChunks)
	}
	if st.dim <= 0 {
		st.dim = DefaultEmbeddingDim
	}
	if len(r.ToolCalls) > 0 {
		st.toolCalls, _ = json.Marshal(r.ToolCalls)
	}
	return st
}

// formatCache maps a raw format value to the chunks of the document that
// satisfies it, so that repeated /predict-style requests with one schema
// cost a map lookup.
type formatCache struct {
	mu sync.RWMutex
	m  map[string][]chunk
}

const formatCacheMax = 256

func (c *formatCache) chunks(format []byte) []chunk {
	c.mu.RLock()
	cs, ok := c.m[string(format)]
	c.mu.RUnlock()
	if ok {
		return cs
	}
	cs = makeChunks(documentFor(format))
	c.mu.Lock()
	if c.m == nil || len(c.m) >= formatCacheMax {
		c.m = make(map[string][]chunk)
	}
	c.m[string(format)] = cs
	c.mu.Unlock()
	return cs
}

// documentFor returns, as JSON tokens, a JSON document that satisfies the
// format, which is "json" or a JSON schema object.
func documentFor(format []byte) []string {
	if string(format) == `"json"` {
		return []string{"{", "}"}
	}
	dec := json.NewDecoder(bytes.NewReader(format))
	dec.UseNumber()
	root, err := decodeOrdered(dec)
	if err != nil {
		return []string{"{", "}"}
	}
	g := docGen{root: root}
	g.value(root, 0)
	return g.toks
}

// object is a JSON object that remembers the order of its keys, so that the
// generated document lists properties in schema order, as Ollama's grammar
// does.
type object struct {
	keys []string
	m    map[string]any
}

func (o *object) get(k string) any {
	if o == nil {
		return nil
	}
	return o.m[k]
}

// MarshalJSON writes o with its keys in their original order.
func (o *object) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, k := range o.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		v, err := json.Marshal(o.m[k])
		if err != nil {
			return nil, err
		}
		b = append(b, v...)
	}
	return append(b, '}'), nil
}

func decodeOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := &object{m: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := kt.(string)
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			if _, dup := o.m[k]; !dup {
				o.keys = append(o.keys, k)
			}
			o.m[k] = v
		}
		_, err := dec.Token() // }
		return o, err
	case json.Delim('['):
		var a []any
		for dec.More() {
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token() // ]
		return a, err
	}
	return tok, nil
}

type docGen struct {
	root any
	toks []string
}

const maxSchemaDepth = 32

func (g *docGen) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte("null")
	}
	g.toks = append(g.toks, string(b))
}

func (g *docGen) value(schema any, depth int) {
	s, ok := schema.(*object)
	if !ok || depth > maxSchemaDepth {
		g.toks = append(g.toks, "null")
		return
	}
	if ref, ok := s.get("$ref").(string); ok {
		g.value(g.resolve(ref), depth+1)
		return
	}
	if v, ok := s.m["const"]; ok {
		g.emit(v)
		return
	}
	if e, ok := s.get("enum").([]any); ok && len(e) > 0 {
		g.emit(e[0])
		return
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf"} {
		if alts, ok := s.get(k).([]any); ok && len(alts) > 0 {
			g.value(alts[0], depth+1)
			return
		}
	}
	typ := ""
	switch t := s.get("type").(type) {
	case string:
		typ = t
	case []any:
		for _, x := range t {
			if x, ok := x.(string); ok && (typ == "" || typ == "null") {
				typ = x
			}
		}
	}
	if typ == "" {
		switch {
		case s.get("properties") != nil:
			typ = "object"
		case s.get("items") != nil || s.get("prefixItems") != nil:
			typ = "array"
		}
	}
	switch typ {
	case "object":
		g.toks = append(g.toks, "{")
		props, _ := s.get("properties").(*object)
		if props != nil {
			for i, k := range props.keys {
				if i > 0 {
					g.toks = append(g.toks, ",")
				}
				g.emit(k)
				g.toks = append(g.toks, ":")
				g.value(props.m[k], depth+1)
			}
		}
		g.toks = append(g.toks, "}")
	case "array":
		n := max(intOf(s.get("minItems")), 1)
		if m, ok := s.m["maxItems"]; ok && intOf(m) < n {
			n = intOf(m)
		}
		prefix, _ := s.get("prefixItems").([]any)
		g.toks = append(g.toks, "[")
		for i := 0; i < n; i++ {
			if i > 0 {
				g.toks = append(g.toks, ",")
			}
			if i < len(prefix) {
				g.value(prefix[i], depth+1)
			} else {
				g.value(s.get("items"), depth+1)
			}
		}
		g.toks = append(g.toks, "]")
	case "string":
		b := make([]byte, intOf(s.get("minLength")))
		for i := range b {
			b[i] = 'a'
		}
		g.emit(string(b))
	case "integer", "number":
		switch {
		case s.m["exclusiveMinimum"] != nil:
			g.toks = append(g.toks, strconv.Itoa(intOf(s.m["exclusiveMinimum"])+1))
		case s.m["minimum"] != nil:
			g.emit(s.m["minimum"])
		default:
			g.toks = append(g.toks, "0")
		}
	case "boolean":
		g.toks = append(g.toks, "false")
	default:
		g.toks = append(g.toks, "null")
	}
}

// resolve follows a local JSON pointer such as "#/$defs/Label".
func (g *docGen) resolve(ref string) any {
	if len(ref) == 0 || ref[0] != '#' {
		return nil
	}
	cur := g.root
	for _, part := range splitPointer(ref[1:]) {
		o, ok := cur.(*object)
		if !ok {
			return nil
		}
		cur = o.m[part]
	}
	return cur
}

func splitPointer(p string) []string {
	var parts []string
	for len(p) > 0 {
		p = p[1:] // leading /
		i := 0
		for i < len(p) && p[i] != '/' {
			i++
		}
		part := p[:i]
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		parts = append(parts, part)
		p = p[i:]
	}
	return parts
}

func intOf(v any) int {
	n, ok := v.(json.Number)
	if !ok {
		return 0
	}
	if i, err := n.Int64(); err == nil {
		return int(i)
	}
	f, _ := n.Float64()
	return int(f)
}
