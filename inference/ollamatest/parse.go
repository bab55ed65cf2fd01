package ollamatest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/ollama/ollama/api"
)

// endpoint identifies the routes whose bodies the hot path parses.
type endpoint uint8

const (
	epGenerate endpoint = iota + 1
	epChat
	epEmbed
)

// parsed is what serving a generate, chat or embed request needs from its
// body. Byte slices may alias the request body.
type parsed struct {
	model       []byte // decoded model name
	words       int    // words in system+prompt (generate), all message contents (chat) or all inputs (embed)
	hasPrompt   bool   // generate: prompt != ""; chat: len(messages) > 0
	stream      bool   // false only for "stream": false
	format      []byte // raw format value; nil when absent, null or ""
	numPredict  int    // options.num_predict as Ollama reads it (0 when unset)
	optErr      string // options rejected as Ollama rejects them (500)
	raw         bool
	rawConflict bool     // generate: raw with system, template or context (400)
	unload      bool     // keep_alive present and shorter than one second
	inputs      [][]byte // embed, full decode: the texts
	inputRaw    []byte   // embed, walk: the raw "input" value (a string or an array of strings, none escaped)
	nInputs     int      // embed: the number of texts
	badInput    bool     // embed: input neither a string nor an array of strings
}

// parseBody reads body the way Ollama's handler binds it (Gin's
// ShouldBindJSON, i.e. json.NewDecoder(body).Decode into the api request
// type). errMsg is non-empty when Ollama would answer 400 {"error": errMsg}.
//
// The common case is served by a small allocation-free walker over the
// bytes; anything it is not sure about (invalid JSON, unexpected types,
// escaped or case-folded keys, images, tools, context) goes to a full decode
// into the api type, which also yields encoding/json's exact error message.
func parseBody(ep endpoint, body []byte) (p parsed, errMsg string) {
	if p, ok := walk(ep, body); ok {
		return p, ""
	}
	return decodeFull(ep, body)
}

// decodeFull decodes body into the api request type of ep, exactly as Ollama
// does, and converts the result.
func decodeFull(ep endpoint, body []byte) (p parsed, errMsg string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var err error
	switch ep {
	case epGenerate:
		var r api.GenerateRequest
		if err = dec.Decode(&r); err == nil {
			p.model = []byte(r.Model)
			p.words = countWords(r.System) + countWords(r.Prompt)
			p.hasPrompt = r.Prompt != ""
			p.stream = r.Stream == nil || *r.Stream
			p.format = normFormat(r.Format)
			p.numPredict, p.optErr = numPredictFromMap(r.Options)
			p.raw = r.Raw
			p.rawConflict = r.Raw && (r.Template != "" || r.System != "" || len(r.Context) > 0)
			p.unload = r.KeepAlive != nil && int(r.KeepAlive.Seconds()) == 0
		}
	case epChat:
		var r api.ChatRequest
		if err = dec.Decode(&r); err == nil {
			p.model = []byte(r.Model)
			for _, m := range r.Messages {
				p.words += countWords(m.Content)
			}
			p.hasPrompt = len(r.Messages) > 0
			p.stream = r.Stream == nil || *r.Stream
			p.format = normFormat(r.Format)
			p.numPredict, p.optErr = numPredictFromMap(r.Options)
			p.unload = r.KeepAlive != nil && int(r.KeepAlive.Seconds()) == 0
		}
	case epEmbed:
		var r api.EmbedRequest
		if err = dec.Decode(&r); err == nil {
			p.model = []byte(r.Model)
			p.stream = true
			p.numPredict, p.optErr = numPredictFromMap(r.Options)
			switch in := r.Input.(type) {
			case nil:
			case string:
				if in != "" {
					p.inputs = append(p.inputs, []byte(in))
				}
			case []any:
				for _, v := range in {
					s, ok := v.(string)
					if !ok {
						p.badInput = true
						p.inputs = nil
						break
					}
					p.inputs = append(p.inputs, []byte(s))
				}
			default:
				p.badInput = true
			}
			for _, in := range p.inputs {
				p.words += countWords(string(in))
			}
			p.nInputs = len(p.inputs)
		}
	}
	if errors.Is(err, io.EOF) {
		return parsed{}, "missing request body"
	}
	if err != nil {
		return parsed{}, err.Error()
	}
	return p, ""
}

func normFormat(f json.RawMessage) []byte {
	if len(f) == 0 || string(f) == "null" || string(f) == `""` {
		return nil
	}
	return f
}

// numPredictFromMap reads options.num_predict as api.Options.FromMap does.
func numPredictFromMap(m map[string]any) (int, string) {
	v, ok := m["num_predict"]
	if !ok || v == nil {
		return 0, ""
	}
	f, ok := v.(float64)
	if !ok {
		return 0, `option "num_predict" must be of type integer`
	}
	return int(int64(f)), ""
}

// walker is a cursor over JSON that json.Valid has accepted.
type walker struct {
	b []byte
	i int
}

func (w *walker) ws() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// str consumes the string at w.i and returns its raw contents (between the
// quotes) and whether it contains escapes.
func (w *walker) str() (raw []byte, esc bool) {
	w.i++ // opening quote
	start := w.i
	for {
		switch w.b[w.i] {
		case '"':
			raw = w.b[start:w.i]
			w.i++
			return raw, esc
		case '\\':
			esc = true
			w.i += 2
		default:
			w.i++
		}
	}
}

// skip consumes one value and returns its raw bytes.
func (w *walker) skip() []byte {
	start := w.i
	switch w.b[w.i] {
	case '"':
		w.str()
	case '{', '[':
		depth := 0
		for {
			switch w.b[w.i] {
			case '"':
				w.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					w.i++
					return w.b[start:w.i]
				}
			}
			w.i++
		}
	default: // number, true, false, null
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return w.b[start:w.i]
			}
			w.i++
		}
	}
	return w.b[start:w.i]
}

// object calls field for each member of the object at w.i, with w.i at the
// member's value; field must consume the value. It stops and returns false
// as soon as field does.
func (w *walker) object(field func(key []byte) bool) bool {
	w.i++ // {
	w.ws()
	if w.b[w.i] == '}' {
		w.i++
		return true
	}
	for {
		w.ws()
		key, esc := w.str()
		if esc {
			return false
		}
		w.ws()
		w.i++ // :
		w.ws()
		if !field(key) {
			return false
		}
		w.ws()
		if w.b[w.i] == '}' {
			w.i++
			return true
		}
		w.i++ // ,
	}
}

// elems calls elem for each element of the array at w.i, with w.i at the
// element; elem must consume it.
func (w *walker) elems(elem func() bool) bool {
	w.i++ // [
	w.ws()
	if w.b[w.i] == ']' {
		w.i++
		return true
	}
	for {
		w.ws()
		if !elem() {
			return false
		}
		w.ws()
		if w.b[w.i] == ']' {
			w.i++
			return true
		}
		w.i++ // ,
	}
}

// keyIs reports whether key names field exactly; a key that matches only
// case-insensitively (encoding/json accepts those) makes the walk give up.
func keyIs(key []byte, field string, giveUp *bool) bool {
	if string(key) == field {
		return true
	}
	if len(key) == len(field) && bytes.EqualFold(key, []byte(field)) {
		*giveUp = true
	}
	return false
}

func asciiOnly(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// walk is the fast path of parseBody. ok is false when the full decode must
// decide.
func walk(ep endpoint, body []byte) (p parsed, ok bool) {
	if !json.Valid(body) {
		return parsed{}, false
	}
	w := walker{b: body}
	w.ws()
	if w.b[w.i] != '{' {
		return parsed{}, false
	}
	p.stream = true
	giveUp := false
	var prompt, system, template []byte
	var stream, hasKeepAlive bool
	streamSet := false
	var keepAlive time.Duration
	done := w.object(func(key []byte) bool {
		if !asciiOnly(key) {
			return false
		}
		c := w.b[w.i]
		isNull := c == 'n'
		isStr := c == '"'
		switch {
		case keyIs(key, "model", &giveUp):
			if isNull {
				w.skip()
				return true
			}
			if !isStr {
				return false
			}
			raw, esc := w.str()
			if esc || !utf8.Valid(raw) {
				return false
			}
			p.model = raw
		case ep != epEmbed && keyIs(key, "stream", &giveUp):
			switch c {
			case 't', 'f':
				streamSet, stream = true, c == 't'
			case 'n':
				streamSet = false
			default:
				return false
			}
			w.skip()
		case keyIs(key, "options", &giveUp):
			switch c {
			case 'n':
				w.skip()
				p.numPredict, p.optErr = 0, ""
			case '{':
				// encoding/json decodes into the map it already has, so an
				// earlier num_predict survives a later options object.
				return w.object(func(k []byte) bool {
					if string(k) != "num_predict" {
						// decoded into map[string]any: numbers must fit a float64
						return numbersInRange(w.skip())
					}
					v := w.skip()
					switch v[0] {
					case 'n':
						p.numPredict, p.optErr = 0, ""
					case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
						n, ok := parseJSONInt(v)
						if !ok {
							return false
						}
						p.numPredict, p.optErr = n, ""
					default:
						p.numPredict, p.optErr = 0, `option "num_predict" must be of type integer`
					}
					return true
				})
			default:
				return false
			}
		case keyIs(key, "keep_alive", &giveUp):
			switch c {
			case 'n':
				hasKeepAlive = false
				w.skip()
			case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
				d, ok := keepAliveDuration(w.skip())
				if !ok {
					return false
				}
				hasKeepAlive, keepAlive = true, d
			default:
				return false
			}
		case ep != epEmbed && keyIs(key, "format", &giveUp):
			p.format = normFormat(w.skip())
		case ep == epEmbed && keyIs(key, "input", &giveUp):
			p.inputRaw, p.nInputs, p.words, p.badInput = nil, 0, 0, false
			start := w.i
			switch c {
			case 'n':
				w.skip()
			case '"':
				raw, esc := w.str()
				if esc || !utf8.Valid(raw) {
					return false
				}
				if len(raw) > 0 {
					p.inputRaw, p.nInputs, p.words = w.b[start:w.i], 1, countRawWords(raw)
				}
			case '[':
				ok := w.elems(func() bool {
					if w.b[w.i] != '"' {
						p.badInput = true
						return numbersInRange(w.skip())
					}
					raw, esc := w.str()
					if esc || !utf8.Valid(raw) {
						return false
					}
					p.nInputs++
					p.words += countRawWords(raw)
					return true
				})
				p.inputRaw = w.b[start:w.i]
				return ok
			default:
				p.badInput = true
				return numbersInRange(w.skip())
			}
		case ep == epEmbed && keyIs(key, "truncate", &giveUp):
			if c != 't' && c != 'f' && c != 'n' {
				return false
			}
			w.skip()
		case ep == epGenerate && keyIs(key, "prompt", &giveUp):
			return stringField(&w, &prompt)
		case ep == epGenerate && keyIs(key, "system", &giveUp):
			return stringField(&w, &system)
		case ep == epGenerate && keyIs(key, "template", &giveUp):
			return stringField(&w, &template)
		case ep == epGenerate && keyIs(key, "suffix", &giveUp):
			var s []byte
			return stringField(&w, &s)
		case ep == epGenerate && keyIs(key, "raw", &giveUp):
			switch c {
			case 't', 'f':
				p.raw = c == 't'
			case 'n':
			default:
				return false
			}
			w.skip()
		case ep != epEmbed && keyIs(key, "think", &giveUp):
			if c != 't' && c != 'f' && c != 'n' {
				return false
			}
			w.skip()
		case ep == epChat && keyIs(key, "messages", &giveUp):
			switch c {
			case 'n':
				p.words, p.hasPrompt = 0, false
				w.skip()
				return true
			case '[':
			default:
				return false
			}
			p.words, p.hasPrompt = 0, false
			return w.elems(func() bool {
				p.hasPrompt = true
				switch w.b[w.i] {
				case 'n':
					w.skip()
					return true
				case '{':
				default:
					return false
				}
				var content []byte
				ok := w.object(func(k []byte) bool {
					if !asciiOnly(k) {
						return false
					}
					gu := false
					switch {
					case keyIs(k, "content", &gu):
						return stringField(&w, &content)
					case keyIs(k, "role", &gu), keyIs(k, "thinking", &gu), keyIs(k, "tool_name", &gu):
						var s []byte
						return stringField(&w, &s)
					case keyIs(k, "images", &gu), keyIs(k, "tool_calls", &gu):
						if w.b[w.i] != 'n' {
							return false
						}
						w.skip()
						return !gu
					}
					w.skip()
					return !gu
				})
				p.words += countRawWords(content)
				return ok
			})
		case ep == epGenerate && (keyIs(key, "context", &giveUp) || keyIs(key, "images", &giveUp)),
			ep == epChat && keyIs(key, "tools", &giveUp):
			if c != 'n' {
				return false
			}
			w.skip()
		default:
			w.skip()
		}
		return !giveUp
	})
	if !done || giveUp {
		return parsed{}, false
	}
	if streamSet {
		p.stream = stream
	}
	p.unload = hasKeepAlive && int(keepAlive.Seconds()) == 0
	switch ep {
	case epGenerate:
		p.words = countRawWords(system) + countRawWords(prompt)
		p.hasPrompt = len(prompt) > 0
		p.rawConflict = p.raw && (len(template) > 0 || len(system) > 0)
	case epEmbed:
		p.unload = false
		if p.badInput || p.nInputs == 0 {
			p.inputRaw, p.nInputs, p.words = nil, 0, 0
		}
	}
	return p, true
}

// eachInput calls fn with each text of an embed request, in order.
func (p *parsed) eachInput(fn func(i int, text []byte)) {
	if p.inputRaw == nil {
		for i, in := range p.inputs {
			fn(i, in)
		}
		return
	}
	w := walker{b: p.inputRaw}
	if w.b[0] == '"' {
		raw, _ := w.str()
		fn(0, raw)
		return
	}
	i := 0
	w.elems(func() bool {
		raw, _ := w.str()
		fn(i, raw)
		i++
		return true
	})
}

// numbersInRange reports whether every number in the JSON value v fits a
// float64, as encoding/json requires when it decodes into an interface.
func numbersInRange(v []byte) bool {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			for i++; v[i] != '"'; i++ {
				if v[i] == '\\' {
					i++
				}
			}
		case c == '-' || c >= '0' && c <= '9':
			start, exp := i, false
			for i < len(v) && strings.IndexByte("+-.0123456789eE", v[i]) >= 0 {
				exp = exp || v[i] == 'e' || v[i] == 'E'
				i++
			}
			if exp || i-start > 300 {
				if _, err := strconv.ParseFloat(string(v[start:i]), 64); err != nil {
					return false
				}
			}
			i--
		}
	}
	return true
}

// stringField consumes a string or null member into *dst (raw contents,
// possibly with escapes: only its emptiness and words are used).
func stringField(w *walker, dst *[]byte) bool {
	switch w.b[w.i] {
	case 'n':
		w.skip()
		return true
	case '"':
		raw, _ := w.str()
		*dst = raw
		return true
	}
	return false
}

// parseJSONInt parses a JSON number the way Ollama reads an integer option
// (a float64 truncated toward zero). ok is false for numbers it leaves to the
// full decode (very long or out of float64 range).
func parseJSONInt(v []byte) (int, bool) {
	n, neg, i := 0, false, 0
	if v[0] == '-' {
		neg, i = true, 1
	}
	if len(v)-i <= 15 {
		simple := true
		for _, c := range v[i:] {
			if c < '0' || c > '9' {
				simple = false
				break
			}
			n = n*10 + int(c-'0')
		}
		if simple {
			if neg {
				n = -n
			}
			return n, true
		}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return 0, false
	}
	return int(int64(f)), true
}

// keepAliveDuration reads keep_alive as api.Duration.UnmarshalJSON does;
// ok is false where that fails (the full decode then reports the error).
func keepAliveDuration(raw []byte) (time.Duration, bool) {
	const forever = time.Duration(1<<63 - 1)
	if raw[0] != '"' {
		t, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return 0, false
		}
		if t < 0 {
			return forever, true
		}
		return time.Duration(int(t) * int(time.Second)), true
	}
	raw = raw[1 : len(raw)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		return 0, false
	}
	// Clients send the same few values ("5m", "30s"): remember the last one
	// rather than allocate a string per request.
	if last := lastKeepAlive.Load(); last != nil && last.raw == string(raw) {
		return last.d, true
	}
	d, err := time.ParseDuration(string(raw))
	if err != nil {
		return 0, false
	}
	if d < 0 {
		d = forever
	}
	lastKeepAlive.Store(&parsedDuration{raw: string(raw), d: d})
	return d, true
}

type parsedDuration struct {
	raw string
	d   time.Duration
}

var lastKeepAlive atomic.Pointer[parsedDuration]

// countWords counts the words (runs of non-space runes, as strings.Fields
// splits them) in the text s.
func countWords(s string) int {
	n, inWord := 0, false
	for _, r := range s {
		if unicode.IsSpace(r) {
			inWord = false
		} else if !inWord {
			inWord = true
			n++
		}
	}
	return n
}

// countRawWords is countWords for the raw contents of a JSON string: it
// decodes escapes on the fly, so it counts the words of the decoded text.
func countRawWords(s []byte) int {
	n, inWord := 0, false
	for i := 0; i < len(s); {
		var r rune
		if c := s[i]; c == '\\' && i+1 < len(s) {
			r, i = jsonEscape(s, i)
		} else if c < utf8.RuneSelf {
			r = rune(c)
			i++
		} else {
			var size int
			r, size = utf8.DecodeRune(s[i:])
			i += size
		}
		if unicode.IsSpace(r) {
			inWord = false
		} else if !inWord {
			inWord = true
			n++
		}
	}
	return n
}

// jsonEscape decodes the escape sequence at s[i] (a backslash) and returns
// the rune and the index after it.
func jsonEscape(s []byte, i int) (rune, int) {
	switch s[i+1] {
	case 'n':
		return '\n', i + 2
	case 't':
		return '\t', i + 2
	case 'r':
		return '\r', i + 2
	case 'f':
		return '\f', i + 2
	case 'b':
		return '\b', i + 2
	case 'u':
		if i+6 > len(s) {
			return utf8.RuneError, len(s)
		}
		r := hex4(s[i+2 : i+6])
		i += 6
		if utf16.IsSurrogate(r) && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
			if dec := utf16.DecodeRune(r, hex4(s[i+2:i+6])); dec != utf8.RuneError {
				return dec, i + 6
			}
		}
		return r, i
	default: // " \ /
		return rune(s[i+1]), i + 2
	}
}

func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return utf8.RuneError
		}
		r = r<<4 | rune(c)
	}
	return r
}
