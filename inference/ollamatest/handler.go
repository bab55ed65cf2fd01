package ollamatest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// Header values, shared by all responses (net/http only reads them).
var (
	ctJSON    = []string{"application/json; charset=utf-8"} // Gin's c.JSON
	ctNDJSON  = []string{"application/x-ndjson"}            // Ollama's streamResponse
	ctText    = []string{"text/plain; charset=utf-8"}       // Gin's c.String
	ctPlain   = []string{"text/plain"}                      // Gin's own 404 and 405
	allowGet  = []string{"HEAD, GET"}
	allowPost = []string{"POST"}
)

const (
	fakeSize     = 1 << 20
	fakeCtxLen   = 4096
	fakeParams   = 1_000_000
	fakeTemplate = "{{ .Prompt }}"
)

func fakeDetails() api.ModelDetails {
	return api.ModelDetails{
		Format:            "gguf",
		Family:            "llama",
		Families:          []string{"llama"},
		ParameterSize:     "1M",
		QuantizationLevel: "Q4_K_M",
	}
}

func fakeDigest(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // don't keep huge buffers
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// serveHTTP serves one request of the fake Ollama API.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.requests.Add(1)
	n := s.inFlight.Add(1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	defer s.inFlight.Add(-1)

	bp := getBuf()
	defer putBuf(bp)
	body, err := readBody(r, bp)
	if err != nil {
		s.canceled.Add(1)
		return
	}
	if s.record {
		body = bytes.Clone(body)
		rec := record{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
		s.mu.Lock()
		s.recs = append(s.recs, rec)
		s.mu.Unlock()
	}

	path := r.URL.Path
	var ep endpoint
	allow := allowPost
	switch path {
	case "/", "/api/version", "/api/tags", "/api/ps":
		allow = allowGet
	case "/api/generate":
		ep = epGenerate
	case "/api/chat":
		ep = epChat
	case "/api/embed":
		ep = epEmbed
	case "/api/show":
	default:
		writeRaw(w, http.StatusNotFound, ctPlain, "404 page not found")
		return
	}
	if !methodAllowed(r.Method, allow[0]) {
		w.Header()["Allow"] = allow
		writeRaw(w, http.StatusMethodNotAllowed, ctPlain, "405 method not allowed")
		return
	}

	var x exchange
	var perr, showModel string
	switch {
	case ep != 0:
		x.p, perr = parseBody(ep, body)
	case path == "/api/show":
		showModel, perr = decodeShow(body)
		x.p.model = []byte(showModel)
	}

	f := s.fault.Load()
	if f != nil && !f.applies(path, ep != 0, x.p.model) {
		f = nil
	}
	if f != nil {
		s.faulted.Add(1)
		if !s.pause(w, r, f.Hold, f.FirstByteDelay, false) {
			return
		}
		if f.Hangup {
			cut(w, false)
			return
		}
		if f.Status != 0 {
			ct, b := statusBody(f, path, x.p.model)
			writeRaw(w, f.Status, ct, b)
			return
		}
	}

	switch path {
	case "/":
		writeRaw(w, http.StatusOK, ctText, "Ollama is running")
	case "/api/version":
		writeBytes(w, http.StatusOK, ctJSON, s.version)
	case "/api/tags":
		writeBytes(w, http.StatusOK, ctJSON, s.tags)
	case "/api/ps":
		writeBytes(w, http.StatusOK, ctJSON, s.ps())
	case "/api/show":
		s.serveShow(w, perr, showModel)
	default:
		if perr != "" {
			writeError(w, http.StatusBadRequest, perr)
			return
		}
		x.s, x.w, x.r, x.f, x.st, x.start, x.loaded = s, w, r, f, s.reply.Load(), start, time.Now()
		if ep == epEmbed {
			x.embed()
		} else {
			x.generate(ep == epChat)
		}
	}
}

// decodeShow reads an /api/show body as Ollama does.
func decodeShow(body []byte) (name, errMsg string) {
	var req api.ShowRequest
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err == io.EOF {
		return "", "missing request body"
	} else if err != nil {
		return "", err.Error()
	}
	if req.Model == "" {
		//lint:ignore SA1019 Ollama still honours the deprecated field, so the fake does too
		req.Model = req.Name
	}
	return req.Model, ""
}

func methodAllowed(method, allow string) bool {
	if allow == "POST" {
		return method == http.MethodPost
	}
	return method == http.MethodGet || method == http.MethodHead
}

func readBody(r *http.Request, bp *[]byte) ([]byte, error) {
	b := *bp
	if r.ContentLength > 0 && int64(cap(b)) < r.ContentLength && r.ContentLength < 64<<20 {
		b = make([]byte, 0, r.ContentLength)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*bp = b
			return b, nil
		}
		if err != nil {
			*bp = b
			return nil, err
		}
	}
}

// known reports whether the server has the model named name.
func (s *Server) known(name []byte) bool {
	if s.anyModel {
		return len(name) > 0
	}
	for _, m := range s.models {
		if modelMatches(name, m) {
			return true
		}
	}
	return false
}

// pause waits for hold and then d, as a fault says. It returns false if the
// client went away (counted as canceled) or the server is closing (the
// connection is then cut); the caller must then return at once.
func (s *Server) pause(w http.ResponseWriter, r *http.Request, hold <-chan struct{}, d time.Duration, wrote bool) bool {
	if hold == nil && d <= 0 {
		return true
	}
	done := r.Context().Done()
	if hold != nil {
		select {
		case <-hold:
		case <-done:
			s.canceled.Add(1)
			return false
		case <-s.closing:
			cut(w, wrote)
			return false
		}
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-done:
			s.canceled.Add(1)
			return false
		case <-s.closing:
			cut(w, wrote)
			return false
		}
	}
	return true
}

// cut closes the connection under w at once. If wrote, what was written so
// far is flushed first; otherwise the client gets no response at all.
func cut(w http.ResponseWriter, wrote bool) {
	if wrote {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // net/http closes the connection
}

func statusBody(f *faultState, path string, name []byte) ([]string, string) {
	if f.Body != "" {
		if strings.HasPrefix(f.Body, "{") {
			return ctJSON, f.Body
		}
		return ctText, f.Body
	}
	var msg string
	switch {
	case f.Status == http.StatusServiceUnavailable:
		return ctJSON, BusyBody
	case f.Status == http.StatusNotFound && (path == "/api/generate" || path == "/api/show"):
		msg = fmt.Sprintf("model '%s' not found", name)
	case f.Status == http.StatusNotFound && (path == "/api/chat" || path == "/api/embed"):
		msg = fmt.Sprintf("model %q not found, try pulling it first", name)
	default:
		msg = strings.ToLower(http.StatusText(f.Status))
		if msg == "" {
			msg = "status " + strconv.Itoa(f.Status)
		}
	}
	return ctJSON, string(appendError(nil, msg))
}

func writeRaw(w http.ResponseWriter, status int, ct []string, body string) {
	w.Header()["Content-Type"] = ct
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func writeBytes(w http.ResponseWriter, status int, ct []string, body []byte) {
	w.Header()["Content-Type"] = ct
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func appendError(b []byte, msg string) []byte {
	b = append(b, `{"error":`...)
	b = appendJSONString(b, msg)
	return append(b, '}')
}

// writeError answers {"error": msg} with status, as Gin's c.JSON does.
func writeError(w http.ResponseWriter, status int, msg string) {
	bp := getBuf()
	*bp = appendError(*bp, msg)
	writeBytes(w, status, ctJSON, *bp)
	putBuf(bp)
}

func (s *Server) serveShow(w http.ResponseWriter, perr, name string) {
	switch {
	case perr != "":
		writeError(w, http.StatusBadRequest, perr)
	case name == "":
		writeError(w, http.StatusBadRequest, "model is required")
	case !s.known([]byte(name)):
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
	default:
		n := normalizeModel(name)
		if !s.anyModel {
			for _, m := range s.models {
				if modelMatches([]byte(name), m) {
					n = string(m)
				}
			}
		}
		resp := api.ShowResponse{
			Modelfile: "# Modelfile generated by \"ollama show\"\n" +
				"# To build a new Modelfile based on this, replace FROM with:\n" +
				"# FROM " + n + "\n\nFROM " + n + "\nTEMPLATE " + fakeTemplate + "\n",
			Template: fakeTemplate,
			Details:  fakeDetails(),
			ModelInfo: map[string]any{
				"general.architecture":    "llama",
				"general.parameter_count": fakeParams,
				"llama.context_length":    fakeCtxLen,
				"llama.embedding_length":  s.reply.Load().dim,
			},
			Capabilities: []model.Capability{model.CapabilityCompletion, model.CapabilityEmbedding},
			ModifiedAt:   s.created,
		}
		b, _ := json.Marshal(resp)
		writeBytes(w, http.StatusOK, ctJSON, b)
	}
}

// exchange is one generate, chat or embed request being answered.
type exchange struct {
	s      *Server
	w      http.ResponseWriter
	r      *http.Request
	p      parsed
	f      *faultState // nil: no fault
	st     *replyState
	start  time.Time // request received
	loaded time.Time // "model loaded": after the fault's first-byte wait
}

// fault returns the stream fault and the chunk index where it strikes, or
// NoStreamFault.
func (x *exchange) fault(n int) (StreamFault, int) {
	if x.f == nil || x.f.Stream == NoStreamFault {
		return NoStreamFault, 0
	}
	return x.f.Stream, max(0, min(x.f.After, n))
}

func (x *exchange) chunkDelay() time.Duration {
	if x.f == nil {
		return 0
	}
	return x.f.ChunkDelay
}

// appendModel appends the requested model name as a JSON string.
func (x *exchange) appendModel(b []byte) []byte {
	if jsonSafe(x.p.model) {
		b = append(b, '"')
		b = append(b, x.p.model...)
		return append(b, '"')
	}
	return appendJSONString(b, x.p.model)
}

func appendHead(b []byte, x *exchange) []byte {
	b = append(b, `{"model":`...)
	b = x.appendModel(b)
	b = append(b, `,"created_at":"`...)
	b = time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// metrics are the counts and timings of a done chunk.
type metrics struct {
	total, load, promptEvalDur, evalDur time.Duration
	promptEval, eval                    int
}

func appendMetrics(b []byte, m *metrics) []byte {
	add := func(b []byte, name string, v int64) []byte {
		if v == 0 {
			return b
		}
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		return strconv.AppendInt(b, v, 10)
	}
	b = add(b, "total_duration", int64(m.total))
	b = add(b, "load_duration", int64(m.load))
	b = add(b, "prompt_eval_count", int64(m.promptEval))
	b = add(b, "prompt_eval_duration", int64(m.promptEvalDur))
	b = add(b, "eval_count", int64(m.eval))
	return add(b, "eval_duration", int64(m.evalDur))
}

func (x *exchange) metrics(promptEval, eval int) metrics {
	now := time.Now()
	m := metrics{
		load:          max(x.loaded.Sub(x.start), 1),
		promptEvalDur: time.Duration(max(promptEval, 1)) * time.Microsecond,
		evalDur:       max(now.Sub(x.loaded), 1),
		promptEval:    promptEval,
		eval:          eval,
	}
	m.total = m.load + m.promptEvalDur + m.evalDur
	return m
}

// simple answers a request with no generation: Ollama's "load" and "unload"
// responses.
func (x *exchange) simple(chat bool, reason string) {
	bp := getBuf()
	defer putBuf(bp)
	b := appendHead(*bp, x)
	if chat {
		b = append(b, `,"message":{"role":"assistant","content":""},"done_reason":"`...)
		b = append(b, reason...)
		b = append(b, `","done":true}`...)
	} else {
		b = append(b, `,"response":"","done":true,"done_reason":"`...)
		b = append(b, reason...)
		b = append(b, `"}`...)
	}
	*bp = b
	writeBytes(x.w, http.StatusOK, ctJSON, b)
}

// generate answers /api/generate (chat false) or /api/chat (chat true),
// following the order of checks of Ollama's handlers.
func (x *exchange) generate(chat bool) {
	p, w := &x.p, x.w
	known := x.s.known(p.model)
	if !chat {
		switch {
		case !known:
			writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", p.model))
		case !p.hasPrompt && p.unload:
			x.simple(false, "unload")
		case p.rawConflict:
			writeError(w, http.StatusBadRequest, "raw mode does not support template, system, or context")
		case p.optErr != "":
			writeError(w, http.StatusInternalServerError, p.optErr)
		case !p.hasPrompt:
			x.simple(false, "load")
		default:
			x.complete(false)
		}
		return
	}
	switch {
	case !p.hasPrompt && p.unload && !known:
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", p.model))
	case !p.hasPrompt && p.unload:
		x.simple(true, "unload")
	case len(p.model) == 0:
		writeError(w, http.StatusBadRequest, "model is required")
	case !known:
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", p.model))
	case p.optErr != "":
		writeError(w, http.StatusInternalServerError, p.optErr)
	case !p.hasPrompt:
		x.simple(true, "load")
	default:
		x.complete(true)
	}
}

// complete streams (or sends as one object) the reply to a generate or
// chat request.
func (x *exchange) complete(chat bool) {
	p, st := &x.p, x.st
	chunks := st.chunks
	var formatErr string
	if p.format != nil {
		switch {
		case string(p.format) != `"json"` && p.format[0] != '{':
			formatErr = fmt.Sprintf("invalid format: %q; expected \"json\" or a valid JSON Schema object", p.format)
		case st.jsonChunks != nil:
			chunks = st.jsonChunks
		default:
			chunks = x.s.formats.chunks(p.format)
		}
	}
	n := len(chunks)
	reason := "stop"
	if p.numPredict > 0 && p.numPredict <= n {
		n, reason = p.numPredict, "length"
	}
	if st.doneReason != "" {
		reason = st.doneReason
	}
	promptEval := st.promptEval
	if promptEval <= 0 {
		promptEval = max(p.words, 1)
	}
	eval := st.evalCount
	if eval <= 0 {
		eval = n
	}
	fault, at := x.fault(n)
	if formatErr != "" {
		// Ollama fails inside the completion: like an error line at 0.
		fault, at, n = ErrorLine, 0, 0
	}
	errMsg := formatErr
	if errMsg == "" && x.f != nil {
		errMsg = x.f.ErrorMessage
	}

	bp := getBuf()
	defer putBuf(bp)
	if !p.stream {
		x.single(chat, bp, chunks[:n], reason, promptEval, eval, fault, at, errMsg)
		return
	}

	w := x.w
	w.Header()["Content-Type"] = ctNDJSON
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(interface{ FlushError() error })
	ctx := x.r.Context()
	delay := x.chunkDelay()
	for i := 0; i <= n; i++ {
		if i > 0 && delay > 0 && !x.s.pause(w, x.r, nil, delay, true) {
			return
		}
		b := (*bp)[:0]
		if fault != NoStreamFault && i == at {
			switch fault {
			case Cut:
				cut(w, true)
				return
			case End:
				return
			case ErrorLine:
				b = appendError(b, errMsg)
				b = append(b, '\n')
				*bp = b
				x.send(flusher, b)
				return
			case Malformed:
				b = x.appendLine(b, chat, chunks, i, n, reason, promptEval, eval)
				b = append(b[:len(b)/2], '\n')
				if !x.send(flusher, b) {
					return
				}
				b = b[:0]
			}
		}
		if ctx.Err() != nil {
			x.s.canceled.Add(1)
			return
		}
		b = x.appendLine(b, chat, chunks, i, n, reason, promptEval, eval)
		*bp = b
		if !x.send(flusher, b) {
			return
		}
	}
}

// appendLine appends stream line i: chunk i, or the done chunk if i == n.
func (x *exchange) appendLine(b []byte, chat bool, chunks []chunk, i, n int, reason string, promptEval, eval int) []byte {
	b = appendHead(b, x)
	if i < n {
		if chat {
			b = append(b, `,"message":{"role":"assistant","content":`...)
			b = append(b, chunks[i].enc...)
			b = append(b, `},"done":false}`...)
		} else {
			b = append(b, `,"response":`...)
			b = append(b, chunks[i].enc...)
			b = append(b, `,"done":false}`...)
		}
		return append(b, '\n')
	}
	b = x.appendDone(b, chat, emptyText, reason, promptEval, n, eval)
	return append(b, '\n')
}

var emptyText = []byte(`""`)

// appendDone appends the final object (after its head) with text, the
// JSON-encoded text it carries.
func (x *exchange) appendDone(b []byte, chat bool, text []byte, reason string, promptEval, sent, eval int) []byte {
	m := x.metrics(promptEval, eval)
	if chat {
		b = append(b, `,"message":{"role":"assistant","content":`...)
		b = append(b, text...)
		if x.st.toolCalls != nil {
			b = append(b, `,"tool_calls":`...)
			b = append(b, x.st.toolCalls...)
		}
		b = append(b, '}')
		if reason != "" {
			b = append(b, `,"done_reason":`...)
			b = appendJSONString(b, reason)
		}
		b = append(b, `,"done":true`...)
	} else {
		b = append(b, `,"response":`...)
		b = append(b, text...)
		b = append(b, `,"done":true`...)
		if reason != "" {
			b = append(b, `,"done_reason":`...)
			b = appendJSONString(b, reason)
		}
		if !x.p.raw {
			// Ollama returns the prompt and reply tokens as "context".
			b = append(b, `,"context":[`...)
			for t := 1; t <= promptEval+sent; t++ {
				if t > 1 {
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, int64(t), 10)
			}
			b = append(b, ']')
		}
	}
	b = appendMetrics(b, &m)
	return append(b, '}')
}

// send writes and flushes b; false means the client is gone (counted).
func (x *exchange) send(flusher interface{ FlushError() error }, b []byte) bool {
	if _, err := x.w.Write(b); err != nil {
		x.s.canceled.Add(1)
		return false
	}
	if flusher != nil {
		if err := flusher.FlushError(); err != nil {
			x.s.canceled.Add(1)
			return false
		}
	}
	return true
}

// single answers a stream:false generate or chat request.
func (x *exchange) single(chat bool, bp *[]byte, chunks []chunk, reason string, promptEval, eval int, fault StreamFault, at int, errMsg string) {
	pauses := len(chunks)
	if fault != NoStreamFault {
		pauses = at
	}
	for i := 0; i < pauses; i++ {
		if !x.s.pause(x.w, x.r, nil, x.chunkDelay(), false) {
			return
		}
	}
	if fault == ErrorLine {
		writeError(x.w, http.StatusInternalServerError, errMsg)
		return
	}
	// The text is encoded whole, as Ollama encodes the concatenation.
	tp, ep := getBuf(), getBuf()
	defer putBuf(tp)
	defer putBuf(ep)
	text := *tp
	for _, c := range chunks {
		text = append(text, c.text...)
	}
	*tp = text
	enc := appendJSONString(*ep, text)
	*ep = enc
	b := appendHead(*bp, x)
	b = x.appendDone(b, chat, enc, reason, promptEval, len(chunks), eval)
	*bp = b
	x.finish(b, fault)
}

// finish sends a complete JSON body, or breaks it as fault says.
func (x *exchange) finish(b []byte, fault StreamFault) {
	w := x.w
	switch fault {
	case Cut:
		w.Header()["Content-Type"] = ctJSON
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:len(b)/2])
		cut(w, true)
	case Malformed:
		writeBytes(w, http.StatusOK, ctJSON, b[:len(b)/2])
	default:
		writeBytes(w, http.StatusOK, ctJSON, b)
	}
}

// embed answers /api/embed.
func (x *exchange) embed() {
	p, w, st := &x.p, x.w, x.st
	switch {
	case p.badInput:
		writeError(w, http.StatusBadRequest, "invalid input type")
		return
	case !x.s.known(p.model):
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", p.model))
		return
	case p.optErr != "":
		writeError(w, http.StatusInternalServerError, p.optErr)
		return
	}
	fault, _ := x.fault(0)
	if fault == ErrorLine {
		writeError(w, http.StatusInternalServerError, x.f.ErrorMessage)
		return
	}
	bp := getBuf()
	defer putBuf(bp)
	b := append(*bp, `{"model":`...)
	b = x.appendModel(b)
	b = append(b, `,"embeddings":[`...)
	p.eachInput(func(i int, text []byte) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendEmbedding(b, text, st.dim)
	})
	b = append(b, ']')
	if p.nInputs > 0 {
		promptEval := st.promptEval
		if promptEval <= 0 {
			promptEval = p.words
		}
		m := x.metrics(promptEval, 0)
		b = appendMetrics(b, &metrics{total: m.load + m.evalDur, load: m.load, promptEval: promptEval})
	}
	b = append(b, '}')
	*bp = b
	x.finish(b, fault)
}

// appendEmbedding appends a unit vector of dim float32 values that depends
// only on text.
func appendEmbedding(b []byte, text []byte, dim int) []byte {
	seed := uint64(14695981039346656037) // FNV-1a
	for _, c := range text {
		seed ^= uint64(c)
		seed *= 1099511628211
	}
	if seed == 0 {
		seed = 1
	}
	next := func(s *uint64) float32 { // xorshift64*, in [-1, 1)
		*s ^= *s >> 12
		*s ^= *s << 25
		*s ^= *s >> 27
		return float32(int64(*s*2685821657736338717)>>11) / (1 << 52)
	}
	var sum float32
	s := seed
	for range dim {
		v := next(&s)
		sum += v * v
	}
	var norm float32
	if sum > 0 {
		norm = float32(1 / math.Sqrt(float64(sum)))
	}
	b = append(b, '[')
	s = seed
	for i := range dim {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat32(b, next(&s)*norm)
	}
	return append(b, ']')
}
