package inference

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"tollgate"
)

const fullCatalog = `# a catalog that sets every field
backends:
  - name: gpu0
    url: 127.0.0.1:11434
    connect_timeout: 2s
    first_byte_timeout: 90s
  - name: gpu1
    url: https://ollama.internal/
models:
  llama3.2:
    ollama: llama3.2:3b
    backend: gpu1
    endpoints: [generate, predict]
    options: {temperature: 0.7, num_ctx: 8192, stop: ["###"]}
    limits: {max_num_predict: 512, max_num_ctx: 8192, max_keep_alive: 10m, max_inputs: 16}
    price: {input_per_1k: 0.0002, output_per_1k: "0.0006"}
  nomic-embed-text:
    ollama: nomic-embed-text
    endpoints: [embed]
tasks:
  sentiment:
    model: llama3.2
    labels: [positive, negative, neutral]
    instruction: Judge the tone.
plans:
  free: {requests_per_second: 0.5, burst: 5, tokens_per_minute: 10000, max_concurrent: 2, monthly_tokens: 100000, monthly_requests: 1000}
  unlimited: {}
`

func TestParseFullCatalog(t *testing.T) {
	c, err := Parse("models.yaml", []byte(fullCatalog))
	if err != nil {
		t.Fatal(err)
	}
	want := &Catalog{
		Backends: []Backend{
			{Name: "gpu0", URL: "http://127.0.0.1:11434", ConnectTimeout: 2 * time.Second, FirstByteTimeout: 90 * time.Second, Weight: 1},
			{Name: "gpu1", URL: "https://ollama.internal:443", ConnectTimeout: DefaultConnectTimeout, FirstByteTimeout: DefaultFirstByteTimeout, Weight: 1},
		},
		Models: map[string]Model{
			"llama3.2": {
				Name:      "llama3.2",
				Ollama:    "llama3.2:3b",
				Backends:  []string{"gpu1"},
				Endpoints: []Endpoint{EndpointGenerate, EndpointPredict},
				Options:   map[string]any{"temperature": 0.7, "num_ctx": 8192, "stop": []string{"###"}},
				Limits:    ModelLimits{MaxNumPredict: 512, MaxNumCtx: 8192, MaxKeepAlive: 10 * time.Minute, MaxInputs: 16, PromptOverhead: DefaultPromptOverhead, PromptTokensPerByte: 1},
				Price:     Price{InputPer1K: 200, OutputPer1K: 600},
			},
			"nomic-embed-text": {
				Name:      "nomic-embed-text",
				Ollama:    "nomic-embed-text",
				Endpoints: []Endpoint{EndpointEmbed},
				Limits:    ModelLimits{MaxNumPredict: DefaultMaxNumPredict, MaxKeepAlive: DefaultMaxKeepAlive, MaxInputs: DefaultMaxInputs, PromptOverhead: DefaultPromptOverhead, PromptTokensPerByte: 1},
			},
		},
		Tasks: map[string]Task{
			"sentiment": {Name: "sentiment", Model: "llama3.2", Labels: []string{"positive", "negative", "neutral"}, Instruction: "Judge the tone."},
		},
		Plans: map[string]Plan{
			"free":      {Name: "free", Limits: tollgate.Limits{RequestsPerSecond: 0.5, Burst: 5, TokensPerMinute: 10000, MaxConcurrent: 2, MonthlyTokens: 100000, MonthlyRequests: 1000}, Weight: 1},
			"unlimited": {Name: "unlimited", Weight: 1},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", c, want)
	}
}

func TestCatalogLookups(t *testing.T) {
	c, err := Parse("models.yaml", []byte(fullCatalog))
	if err != nil {
		t.Fatal(err)
	}
	if names := modelNames(c.ModelList()); !reflect.DeepEqual(names, []string{"llama3.2", "nomic-embed-text"}) {
		t.Errorf("ModelList = %v", names)
	}

	var unknown *UnknownModelError
	if _, err := c.Model("gpt-4"); !errors.As(err, &unknown) || unknown.Name != "gpt-4" {
		t.Errorf("Model(gpt-4) error = %v, want *UnknownModelError", err)
	}
	if _, err := c.ModelFor("gpt-4", EndpointGenerate); !errors.As(err, &unknown) {
		t.Errorf("ModelFor(gpt-4) error = %v, want *UnknownModelError", err)
	}
	for _, tc := range []struct {
		name string
		e    Endpoint
		want string
	}{
		{"", EndpointEmbed, "nomic-embed-text"},
		{"", EndpointGenerate, "llama3.2"},
		{"llama3.2", EndpointPredict, "llama3.2"},
	} {
		m, err := c.ModelFor(tc.name, tc.e)
		if err != nil || m.Name != tc.want {
			t.Errorf("ModelFor(%q, %s) = %q, %v; want %q", tc.name, tc.e, m.Name, err, tc.want)
		}
	}
	var inv *InvalidError
	if _, err := c.ModelFor("llama3.2", EndpointEmbed); !errors.As(err, &inv) || inv.Field != "model" || !strings.Contains(inv.Reason, "does not serve /embed") {
		t.Errorf("ModelFor(llama3.2, embed) error = %v, want model does not serve /embed", err)
	}
	embedOnly := &Catalog{Models: map[string]Model{"e": {Name: "e", Endpoints: []Endpoint{EndpointEmbed}}}}
	if _, err := embedOnly.ModelFor("", EndpointPredict); !errors.As(err, &inv) || !strings.Contains(inv.Reason, "no model in the catalog serves /predict") {
		t.Errorf("ModelFor(\"\", predict) with no predict model: error = %v", err)
	}

	if task, err := c.Task("sentiment"); err != nil || task.Model != "llama3.2" {
		t.Errorf("Task(sentiment) = %+v, %v", task, err)
	}
	var unknownTask *UnknownTaskError
	if _, err := c.Task("spam"); !errors.As(err, &unknownTask) || unknownTask.Name != "spam" || !strings.Contains(err.Error(), `"spam"`) {
		t.Errorf("Task(spam) error = %v, want *UnknownTaskError", err)
	}

	for name, want := range map[string]string{"": "gpu0", "gpu0": "gpu0", "gpu1": "gpu1"} {
		if b, ok := c.Backend(name); !ok || b.Name != want {
			t.Errorf("Backend(%q) = %q, %v; want %q", name, b.Name, ok, want)
		}
	}
	if _, ok := c.Backend("gpu9"); ok {
		t.Error("Backend(gpu9) found a backend")
	}
}

func modelNames(ms []Model) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestParseBroken(t *testing.T) {
	const (
		backend   = "backends:\n  - url: localhost\n"                             // lines 1-2
		modelM    = backend + "models:\n  m:\n    ollama: m\n"                    // lines 1-5, model m goes on
		predictor = backend + "models:\n  m: {ollama: m, endpoints: [predict]}\n" // lines 1-4
		embedder  = backend + "models:\n  m: {ollama: m, endpoints: [embed]}\n"   // lines 1-4
	)
	for _, tc := range []struct {
		name   string
		yaml   string
		line   int
		field  string
		reason string
	}{
		{"empty file", "", 0, "", "file is empty"},
		{"only comments", "# nothing yet\n", 0, "", "file is empty"},
		{"not a mapping", "- a\n- b\n", 1, "", "must be a mapping"},
		{"unclosed flow mapping", backend + "models:\n  m: {ollama: m, endpoints: [generate]\n", 4, "", "did not find expected ',' or '}'"},
		{"sequence item in a mapping", backend + "- url: other\n", 3, "", "did not find expected key"},
		{"mapping value in a scalar", backend + "models: m: x\n", 3, "", "mapping values are not allowed"},
		{"tab indentation", backend + "models:\n\tm: {}\n", 4, "", "cannot start any token"},
		{"unknown top-level field", backend + "models:\n  m: {ollama: m, endpoints: [generate]}\npricing: {}\n", 5, "pricing", "unknown field (allowed: backends, models, tasks, plans, currency)"},
		{"currency not a code", backend + "models:\n  m: {ollama: m, endpoints: [generate]}\ncurrency: dollars\n", 5, "currency", "three-letter ISO 4217 code"},
		{"top-level field twice", backend + "backends: []\n", 3, "backends", "appears twice"},
		{"missing backends", "models:\n  m: {ollama: m, endpoints: [generate]}\n", 1, "backends", "at least one Ollama backend"},
		{"empty backends", "backends: []\nmodels:\n  m: {ollama: m, endpoints: [generate]}\n", 1, "backends", "at least one Ollama backend"},
		{"backends not a list", "backends: {url: localhost}\n", 1, "backends", "must be a list"},
		{"backend without url", "backends:\n  - name: gpu0\n", 2, "backends[0].url", "is required"},
		{"backend url ftp", "backends:\n  - url: ftp://files.example\n", 2, "backends[0].url", `scheme must be http or https (got "ftp")`},
		{"backend url userinfo", "backends:\n  - url: http://admin:hunter2@gpu:11434\n", 2, "backends[0].url", "no user, query or fragment"},
		{"backend url query", "backends:\n  - url: http://gpu:11434/?x=1\n", 2, "backends[0].url", "no user, query or fragment"},
		{"backend url empty", "backends:\n  - url: \"\"\n", 2, "backends[0].url", "must be a non-empty string"},
		{"backend unknown field", "backends:\n  - url: localhost\n    timeout: 5s\n", 3, "backends[0].timeout", "unknown field"},
		{"backend names twice", "backends:\n  - {name: a, url: h1}\n  - {name: a, url: h2}\n", 3, "backends[1].name", `backend "a" is defined twice`},
		{"bad duration", "backends:\n  - url: localhost\n    first_byte_timeout: 5\n", 3, "backends[0].first_byte_timeout", `must be a positive duration like 30s or 5m (got "5")`},
		{"negative duration", "backends:\n  - url: localhost\n    connect_timeout: -1s\n", 3, "backends[0].connect_timeout", "must be a positive duration"},
		{"missing models", backend, 1, "models", "at least one model is required"},
		{"empty models", backend + "models: {}\n", 3, "models", "at least one model is required"},
		{"missing ollama name", backend + "models:\n  m:\n    endpoints: [generate]\n", 5, "models.m.ollama", "is required (the model name Ollama runs"},
		{"missing endpoints", modelM, 5, "models.m.endpoints", "is required (any of generate, embed, predict)"},
		{"unknown endpoint", modelM + "    endpoints:\n      - generate\n      - chat\n", 8, "models.m.endpoints[1]", `unknown endpoint "chat"`},
		{"unknown model field", modelM + "    gpu: 1\n", 6, "models.m.gpu", "unknown field"},
		{"model backend missing", modelM + "    backend: gpu7\n", 6, "models.m.backend", `no backend named "gpu7"`},
		{"model backends missing", modelM + "    backends: [backend0, gpu7]\n", 6, "models.m.backends[1]", `no backend named "gpu7"`},
		{"model backends empty", modelM + "    backends: []\n", 6, "models.m.backends", "must name at least one backend"},
		{"model backend and backends", modelM + "    backend: backend0\n    backends: [backend0]\n", 7, "models.m.backends", "give backend or backends, not both"},
		{"backend url twice", "backends:\n  - {name: a, url: h1}\n  - {name: b, url: \"http://h1:11434\"}\n", 3, "backends[1].url", `http://h1:11434 is already backend "a"`},
		{"backend max_parallel zero", "backends:\n  - url: localhost\n    max_parallel: 0\n", 3, "backends[0].max_parallel", "must be a positive integer"},
		{"backend weight fraction", "backends:\n  - {url: localhost, weight: 1.5}\n", 2, "backends[0].weight", "must be a positive integer"},
		{"plan weight zero", embedder + "plans:\n  free: {weight: 0}\n", 6, "plans.free.weight", "must be a positive integer"},
		{"bad option type", modelM + "    endpoints: [generate]\n    options:\n      top_k: 40\n      temperature: hot\n", 9, "models.m.options.temperature", "must be a number"},
		{"option out of range", modelM + "    endpoints: [generate]\n    options: {top_p: 2}\n", 7, "models.m.options.top_p", "must be between 0 and 1"},
		{"operator-only option", modelM + "    endpoints: [generate]\n    options:\n      num_gpu: 99\n", 8, "models.m.options.num_gpu", "is not an option a request may set"},
		{"options not a mapping", modelM + "    options: [temperature]\n", 6, "models.m.options", "must be a mapping of Ollama options"},
		{"limit zero", modelM + "    limits: {max_num_predict: 0}\n", 6, "models.m.limits.max_num_predict", "must be a positive integer"},
		{"limit not an integer", modelM + "    endpoints: [embed]\n    limits:\n      max_inputs: 1.5\n", 8, "models.m.limits.max_inputs", "must be a positive integer"},
		{"limit bad duration", modelM + "    limits:\n      max_keep_alive: forever\n", 7, "models.m.limits.max_keep_alive", `got "forever"`},
		{"negative price", modelM + "    price: {input_per_1k: -1}\n", 6, "models.m.price.input_per_1k", `non-negative decimal with at most 6 decimal places (got "-1")`},
		{"price exponent", modelM + "    price:\n      output_per_1k: 2e-4\n", 7, "models.m.price.output_per_1k", `got "2e-4"`},
		{"price too precise", modelM + "    price: {input_per_1k: 0.0000001}\n", 6, "models.m.price.input_per_1k", "at most 6 decimal places"},
		{"price empty", modelM + "    price: {input_per_1k: }\n", 6, "models.m.price.input_per_1k", "non-negative decimal"},
		{"price list", modelM + "    price: {input_per_1k: [1]}\n", 6, "models.m.price.input_per_1k", "non-negative decimal"},
		{"task missing model", predictor + "tasks:\n  sentiment:\n    labels: [a, b]\n    model: other\n", 8, "tasks.sentiment.model", `no model named "other" in models`},
		{"task without model", predictor + "tasks:\n  sentiment:\n    labels: [a, b]\n", 7, "tasks.sentiment.model", "is required"},
		{"task model not serving predict", backend + "models:\n  m: {ollama: m, endpoints: [generate, embed]}\ntasks:\n  sentiment:\n    model: m\n    labels: [a, b]\n", 7, "tasks.sentiment.model", `model "m" does not list predict in its endpoints`},
		{"task without labels", predictor + "tasks:\n  sentiment:\n    model: m\n", 7, "tasks.sentiment.labels", "is required and must not be empty"},
		{"empty labels", predictor + "tasks:\n  sentiment:\n    model: m\n    labels: []\n", 8, "tasks.sentiment.labels", "must list at least one label"},
		{"duplicate labels", predictor + "tasks:\n  sentiment:\n    model: m\n    labels:\n      - a\n      - b\n      - a\n", 11, "tasks.sentiment.labels[2]", `duplicates label "a"`},
		{"blank label", predictor + "tasks:\n  s: {model: m, labels: [a, \" \"]}\n", 6, "tasks.s.labels[1]", "must be a non-empty string"},
		{"plan negative", embedder + "plans:\n  free:\n    burst: -1\n", 7, "plans.free.burst", "must be a non-negative integer"},
		{"plan burst fraction", embedder + "plans:\n  free: {burst: 2.5}\n", 6, "plans.free.burst", "must be a non-negative integer"},
		{"plan rate NaN", embedder + "plans:\n  free: {requests_per_second: .nan}\n", 6, "plans.free.requests_per_second", "finite, non-negative number"},
		{"plan rate infinite", embedder + "plans:\n  free: {requests_per_second: .inf}\n", 6, "plans.free.requests_per_second", "finite, non-negative number"},
		{"plan rate too low", embedder + "plans:\n  free: {requests_per_second: 0.0001}\n", 6, "plans.free.requests_per_second", "at least 0.001 (one request per 1000 s)"},
		{"plan unknown field", embedder + "plans:\n  free: {rpm: 5}\n", 6, "plans.free.rpm", "unknown field"},
		{"plan budget negative", embedder + "plans:\n  free: {monthly_budget: -1}\n", 6, "plans.free.monthly_budget", "non-negative decimal amount"},
		{"plan budget too fine", embedder + "plans:\n  free: {monthly_budget: 0.0000001}\n", 6, "plans.free.monthly_budget", "at most 6 decimal places"},
		{"model twice", embedder + "  m: {ollama: n, endpoints: [embed]}\n", 5, "models.m", "appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("models.yaml", []byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Parse = %+v, %v; want a *ConfigError", c, err)
			}
			if c != nil {
				t.Errorf("Parse returned a catalog with the error")
			}
			if ce.File != "models.yaml" || ce.Line != tc.line || ce.Field != tc.field || !strings.Contains(ce.Reason, tc.reason) {
				t.Errorf("error %q: got file %q line %d field %q reason %q; want line %d field %q reason containing %q",
					err, ce.File, ce.Line, ce.Field, ce.Reason, tc.line, tc.field, tc.reason)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q repeats a password from the file", err)
			}
		})
	}
}

func TestConfigErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  ConfigError
		want string
	}{
		{ConfigError{File: "m.yaml", Line: 3, Field: "models.x", Reason: "bad"}, "m.yaml:3: models.x: bad"},
		{ConfigError{File: "m.yaml", Line: 3, Reason: "bad"}, "m.yaml:3: bad"},
		{ConfigError{File: "m.yaml", Reason: "file is empty"}, "m.yaml: file is empty"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "models.yaml")
	if err := os.WriteFile(path, []byte(fullCatalog), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Models) != 2 || len(c.Backends) != 2 {
		t.Errorf("LoadFile: %d models, %d backends", len(c.Models), len(c.Backends))
	}

	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("backends: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(broken)
	if want := broken + ":1: backends: at least one Ollama backend is required"; err == nil || err.Error() != want {
		t.Errorf("LoadFile(broken) error = %v, want %q", err, want)
	}

	missing := filepath.Join(dir, "nope.yaml")
	_, err = LoadFile(missing)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != missing || !errors.Is(err, err) || !strings.Contains(ce.Reason, "no such file") {
		t.Errorf("LoadFile(missing) error = %v, want a *ConfigError naming the file", err)
	}
}

func TestParseOllamaURL(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "localhost", want: "http://localhost:11434"},
		{in: "  10.0.0.5  ", want: "http://10.0.0.5:11434"},
		{in: "gpu1:8080", want: "http://gpu1:8080"},
		{in: "gpu1:", want: "http://gpu1:11434"},
		{in: "http://127.0.0.1:11434", want: "http://127.0.0.1:11434"},
		{in: "http://127.0.0.1:11434/", want: "http://127.0.0.1:11434"},
		{in: "http://ollama", want: "http://ollama:11434"},
		{in: "https://ollama.example.com", want: "https://ollama.example.com:443"},
		{in: "https://ollama.example.com:8443/", want: "https://ollama.example.com:8443"},
		{in: "https://proxy.example.com/ollama/", want: "https://proxy.example.com:443/ollama"},
		{in: "[::1]:11434", want: "http://[::1]:11434"},
		{in: "http://[::1]", want: "http://[::1]:11434"},
		{in: "ftp://host", err: `scheme must be http or https (got "ftp")`},
		{in: "unix:///run/ollama.sock", err: "scheme must be http or https"},
		{in: "http://user:secret@host:11434", err: "no user"},
		{in: "http://host:11434/?debug=1", err: "no user, query or fragment"},
		{in: "http://host:11434/#top", err: "no user, query or fragment"},
		{in: "http://", err: "has no host"},
		{in: "http://host:port", err: "is not a URL"},
		{in: "", err: "has no host"},
	} {
		got, err := ParseOllamaURL(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseOllamaURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseOllamaURL(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
		case err != nil && strings.Contains(err.Error(), "secret"):
			t.Errorf("ParseOllamaURL(%q) error %q repeats the password", tc.in, err)
		}
	}
}

// A fleet: weights and max_parallel per backend, a model on some backends,
// a plan's weight.
func TestParseFleet(t *testing.T) {
	c, err := Parse("fleet.yaml", []byte(`backends:
  - {name: gpu0, url: "10.0.0.5", max_parallel: 4}
  - {name: gpu1, url: "10.0.0.6", max_parallel: 2, weight: 3}
models:
  everywhere: {ollama: llama3.2, endpoints: [generate]}
  one: {ollama: nomic-embed-text, endpoints: [embed], backend: gpu1}
  some: {ollama: qwen2, endpoints: [generate], backends: [gpu0]}
plans:
  free: {}
  pro: {weight: 4, monthly_budget: 25.5}
`))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Backends[1]; b.URL != "http://10.0.0.6:11434" || b.MaxParallel != 2 || b.Weight != 3 || c.Backends[0].Weight != 1 {
		t.Errorf("backends %+v", c.Backends)
	}
	names := func(bs []Backend) (out []string) {
		for _, b := range bs {
			out = append(out, b.Name)
		}
		return out
	}
	for model, want := range map[string][]string{"everywhere": {"gpu0", "gpu1"}, "one": {"gpu1"}, "some": {"gpu0"}} {
		if got := names(c.BackendsFor(c.Models[model])); !reflect.DeepEqual(got, want) {
			t.Errorf("%s served by %v, want %v", model, got, want)
		}
	}
	if c.Plans["free"].Weight != 1 || c.Plans["pro"].Weight != 4 || c.Plans["pro"].Limits.MonthlyBudget != 25_500_000 || c.Plans["free"].Limits.MonthlyBudget != 0 {
		t.Errorf("plans %+v", c.Plans)
	}
}
