// Package inference turns public model names into calls to Ollama: it owns
// the models.yaml catalog (backends, models, predict tasks, plans) and a
// client that speaks to Ollama through github.com/ollama/ollama/api and
// reports failures as typed errors a handler can map to HTTP.
package inference

import (
	"sort"
	"strings"
	"time"

	"tollgate"
)

// Endpoint names an inference operation a model may serve: one of the
// inference capabilities.
type Endpoint = tollgate.Capability

// The endpoints of the native surface.
const (
	EndpointGenerate = tollgate.Generate
	EndpointEmbed    = tollgate.Embed
	EndpointPredict  = tollgate.Predict
)

// Catalog is the parsed, validated models.yaml. It is immutable after Load
// and safe for concurrent use.
type Catalog struct {
	Backends []Backend
	Models   map[string]Model
	Tasks    map[string]Task
	Plans    map[string]Plan
	// Currency is the ISO 4217 code of the prices (models.yaml's
	// currency), or "" when the catalog does not say.
	Currency string
}

// Backend is one Ollama server (one GPU or host).
type Backend struct {
	Name string
	URL  string
	// Weight breaks ties between backends equally loaded relative to
	// their capacity: the heavier one is chosen (1 by default).
	Weight int
	// MaxParallel is how many requests the backend runs at once (match
	// its OLLAMA_NUM_PARALLEL); more wait in Tollgate's fair queue. 0: the
	// Client's default (WithDefaultParallel).
	MaxParallel      int
	ConnectTimeout   time.Duration // dialing Ollama
	FirstByteTimeout time.Duration // request sent -> response headers (covers model load)
}

// Model is a public model name and what it maps to.
type Model struct {
	Name      string         // public name clients send
	Ollama    string         // model Ollama runs
	Backends  []string       // the Backend.Names serving it; empty: all of them
	Endpoints []Endpoint     // routes it may serve
	Options   map[string]any // default Ollama options, overridable per request
	Limits    ModelLimits
	Price     Price
}

// ModelLimits caps the GPU-costly knobs a request may set.
type ModelLimits struct {
	MaxNumPredict int           // output tokens; also the default when a request sets none
	MaxNumCtx     int           // context window; 0 = the model's own default, requests may not raise it
	MaxKeepAlive  time.Duration // how long a request may ask the model to stay loaded
	MaxInputs     int           // array length for /embed and /predict
	// PromptOverhead bounds the tokens the model's template adds to a
	// prompt (special tokens, role headers, a default system prompt), on
	// top of PromptTokensPerByte per byte of text. Admission reserves prompt bytes
	// plus this overhead against token quotas before Ollama has counted.
	PromptOverhead int
	// PromptTokensPerByte bounds how many tokens one byte of prompt text
	// can become: 1 for byte-level BPE (Llama 3, Qwen), SentencePiece with
	// "▁" in its vocabulary (Llama 2, Mistral, Gemma) and WordPiece; more
	// for a vocabulary that spells a space as several byte tokens.
	PromptTokensPerByte int
}

// Price is what a model costs per 1,000 tokens (tollgate.Price), parsed
// exactly from the decimal text in models.yaml.
type Price = tollgate.Price

// Task is a named /predict classification.
type Task struct {
	Name        string
	Model       string // public model name
	Labels      []string
	Instruction string
}

// Plan is a named set of per-key limits. Zero means unlimited.
type Plan struct {
	Name          string
	Limits        tollgate.Limits
	MaxNumPredict int // caps the model's max_num_predict for keys on this plan; 0 = no extra cap
	MaxNumCtx     int // caps the model's max_num_ctx likewise
	// Weight is the plan's share of the GPUs when requests queue: a key
	// on a plan of weight 4 is served four requests for each one of a key
	// on a plan of weight 1 (1 by default).
	Weight int
}

// Restrict returns m with its GPU-costly limits lowered to the plan's.
func (p Plan) Restrict(m Model) Model {
	if p.MaxNumPredict > 0 && p.MaxNumPredict < m.Limits.MaxNumPredict {
		m.Limits.MaxNumPredict = p.MaxNumPredict
	}
	if p.MaxNumCtx > 0 && (m.Limits.MaxNumCtx == 0 || p.MaxNumCtx < m.Limits.MaxNumCtx) {
		m.Limits.MaxNumCtx = p.MaxNumCtx
	}
	return m
}

// PromptBound bounds the tokens a prompt of textBytes bytes in messages
// chat messages (0 for a plain prompt) can take with this model.
func (l ModelLimits) PromptBound(textBytes, messages int) int64 {
	return int64(textBytes*max(1, l.PromptTokensPerByte) + l.PromptOverhead + perMessage*messages)
}

// perMessage bounds the tokens a chat template adds around each message
// (role headers, separators).
const perMessage = 8

// Serves reports whether the model may be used on endpoint e.
func (m Model) Serves(e Endpoint) bool {
	for _, x := range m.Endpoints {
		if x == e {
			return true
		}
	}
	return false
}

// Model returns the public model called name, or an *UnknownModelError.
// As in Ollama, "name:latest" is name, so clients that add the default tag
// find the model.
func (c *Catalog) Model(name string) (Model, error) {
	m, ok := c.Models[name]
	if !ok {
		if base, found := strings.CutSuffix(name, ":latest"); found {
			m, ok = c.Models[base]
		}
	}
	if !ok {
		return Model{}, &UnknownModelError{Name: name}
	}
	return m, nil
}

// ModelFor returns the public model called name if it serves endpoint e.
// An empty name picks the only (or first by name) model serving e.
func (c *Catalog) ModelFor(name string, e Endpoint) (Model, error) {
	if name == "" {
		for _, m := range c.ModelList() {
			if m.Serves(e) {
				return m, nil
			}
		}
		return Model{}, &InvalidError{Field: "model", Reason: "is required (no model in the catalog serves /" + string(e) + ")"}
	}
	m, err := c.Model(name)
	if err != nil {
		return Model{}, err
	}
	if !m.Serves(e) {
		return Model{}, &InvalidError{Field: "model", Reason: "model " + quote(name) + " does not serve /" + string(e)}
	}
	return m, nil
}

// Task returns the task called name, or an *UnknownTaskError.
func (c *Catalog) Task(name string) (Task, error) {
	t, ok := c.Tasks[name]
	if !ok {
		return Task{}, &UnknownTaskError{Name: name}
	}
	return t, nil
}

// ModelList returns the models sorted by public name.
func (c *Catalog) ModelList() []Model {
	out := make([]Model, 0, len(c.Models))
	for _, m := range c.Models {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// BackendsFor returns the backends that serve m, in catalog order.
func (c *Catalog) BackendsFor(m Model) []Backend {
	if len(m.Backends) == 0 {
		return c.Backends
	}
	var out []Backend
	for _, b := range c.Backends {
		if contains(m.Backends, b.Name) {
			out = append(out, b)
		}
	}
	return out
}

// ServedBy reports whether the backend called b serves m.
func (m Model) ServedBy(b string) bool {
	return len(m.Backends) == 0 || contains(m.Backends, b)
}

// Backend returns the backend called name (the first one when name is "").
func (c *Catalog) Backend(name string) (Backend, bool) {
	for _, b := range c.Backends {
		if name == "" || b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}
