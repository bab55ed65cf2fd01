package inference

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
	"tollgate"

	"gopkg.in/yaml.v3"
)

// ConfigError is a models.yaml problem: where it is and what is wrong.
type ConfigError struct {
	File   string
	Line   int
	Field  string // dotted path, e.g. models.llama3.2.endpoints[1]
	Reason string
}

func (e *ConfigError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field == "" {
		return loc + ": " + e.Reason
	}
	return loc + ": " + e.Field + ": " + e.Reason
}

// Defaults applied when models.yaml leaves a field out.
const (
	DefaultMaxNumPredict    = 2048
	DefaultMaxInputs        = 64
	DefaultPromptOverhead   = 64
	DefaultMaxKeepAlive     = 30 * time.Minute
	DefaultConnectTimeout   = 5 * time.Second
	DefaultFirstByteTimeout = 5 * time.Minute
)

// LoadFile reads and validates the catalog at path.
func LoadFile(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{File: path, Reason: err.Error()}
	}
	return Parse(path, data)
}

// Parse validates the catalog in data; file is used in error messages only.
// Every problem is reported as a *ConfigError (the first one found).
func Parse(file string, data []byte) (*Catalog, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, p.yamlError(err)
	}
	if len(doc.Content) == 0 {
		return nil, &ConfigError{File: file, Reason: "file is empty"}
	}
	c, err := p.catalog(doc.Content[0])
	if err != nil {
		return nil, err
	}
	return c, nil
}

type parser struct{ file string }

func (p *parser) errf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ConfigError{File: p.file, Line: line, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func (p *parser) yamlError(err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ":"); ok {
			fmt.Sscanf(n, "%d", &line)
			msg = strings.TrimSpace(after)
		}
	}
	if line > 0 && isParserError(msg) {
		line++
	}
	return &ConfigError{File: p.file, Line: line, Reason: msg}
}

// isParserError reports whether msg is one of yaml.v3's parser (not
// scanner) errors. yaml.v3 reports those with the 0-based line of their
// mark (it adds one for scanner errors only), so their line is one short.
func isParserError(msg string) bool {
	for _, prefix := range []string{"did not find expected", "found duplicate %", "found incompatible YAML document", "found undefined tag handle"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// mapping walks a YAML mapping, rejecting keys not in allowed.
func (p *parser) mapping(n *yaml.Node, field string, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, field, "must be a mapping")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		sub := join(field, k.Value)
		if allowed != nil && !contains(allowed, k.Value) {
			return p.errf(k, sub, "unknown field (allowed: %s)", strings.Join(allowed, ", "))
		}
		if seen[k.Value] {
			return p.errf(k, sub, "appears twice")
		}
		seen[k.Value] = true
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) catalog(root *yaml.Node) (*Catalog, error) {
	c := &Catalog{Models: map[string]Model{}, Tasks: map[string]Task{}, Plans: map[string]Plan{}}
	var modelsNode, tasksNode *yaml.Node
	err := p.mapping(root, "", []string{"backends", "models", "tasks", "plans", "currency"}, func(key string, _, v *yaml.Node) error {
		switch key {
		case "currency":
			return p.currency(v, c)
		case "backends":
			return p.backends(v, c)
		case "models":
			modelsNode = v
		case "tasks":
			tasksNode = v
		case "plans":
			return p.mapping(v, "plans", nil, func(name string, _, pv *yaml.Node) error {
				plan, err := p.plan(pv, "plans."+name)
				plan.Name = name
				c.Plans[name] = plan
				return err
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(c.Backends) == 0 {
		return nil, p.errf(root, "backends", "at least one Ollama backend is required")
	}
	if modelsNode == nil {
		return nil, p.errf(root, "models", "at least one model is required")
	}
	if err := p.mapping(modelsNode, "models", nil, func(name string, k, v *yaml.Node) error {
		m, err := p.model(v, "models."+name, c)
		m.Name = name
		c.Models[name] = m
		return err
	}); err != nil {
		return nil, err
	}
	if len(c.Models) == 0 {
		return nil, p.errf(modelsNode, "models", "at least one model is required")
	}
	if tasksNode != nil {
		if err := p.mapping(tasksNode, "tasks", nil, func(name string, _, v *yaml.Node) error {
			t, err := p.task(v, "tasks."+name, c)
			t.Name = name
			c.Tasks[name] = t
			return err
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// currency reads the optional ISO 4217 code of the prices' currency.
func (p *parser) currency(n *yaml.Node, c *Catalog) error {
	v := n.Value
	ok := n.Kind == yaml.ScalarNode && len(v) == 3
	for i := 0; ok && i < len(v); i++ {
		ok = v[i] >= 'A' && v[i] <= 'Z'
	}
	if !ok {
		return p.errf(n, "currency", "must be a three-letter ISO 4217 code such as USD or EUR")
	}
	c.Currency = v
	return nil
}

func (p *parser) backends(n *yaml.Node, c *Catalog) error {
	if n.Kind != yaml.SequenceNode {
		return p.errf(n, "backends", "must be a list of {url: ...}")
	}
	for i, bn := range n.Content {
		field := fmt.Sprintf("backends[%d]", i)
		b := Backend{Name: fmt.Sprintf("backend%d", i), ConnectTimeout: DefaultConnectTimeout, FirstByteTimeout: DefaultFirstByteTimeout,
			Weight: 1}
		err := p.mapping(bn, field, []string{"name", "url", "weight", "max_parallel", "connect_timeout", "first_byte_timeout"}, func(key string, _, v *yaml.Node) error {
			var err error
			switch key {
			case "name":
				b.Name, err = p.str(v, field+".name")
			case "url":
				b.URL, err = p.url(v, field+".url")
			case "weight":
				b.Weight, err = p.positiveInt(v, field+".weight")
			case "max_parallel":
				b.MaxParallel, err = p.positiveInt(v, field+".max_parallel")
			case "connect_timeout":
				b.ConnectTimeout, err = p.duration(v, field+"."+key)
			case "first_byte_timeout":
				b.FirstByteTimeout, err = p.duration(v, field+"."+key)
			}
			return err
		})
		if err != nil {
			return err
		}
		if b.URL == "" {
			return p.errf(bn, field+".url", "is required")
		}
		if _, dup := c.Backend(b.Name); dup {
			return p.errf(bn, field+".name", "backend %q is defined twice", b.Name)
		}
		for _, o := range c.Backends {
			if o.URL == b.URL {
				return p.errf(bn, field+".url", "%s is already backend %q", b.URL, o.Name)
			}
		}
		c.Backends = append(c.Backends, b)
	}
	return nil
}

func (p *parser) model(n *yaml.Node, field string, c *Catalog) (Model, error) {
	m := Model{Limits: ModelLimits{MaxNumPredict: DefaultMaxNumPredict, MaxKeepAlive: DefaultMaxKeepAlive, MaxInputs: DefaultMaxInputs, PromptOverhead: DefaultPromptOverhead, PromptTokensPerByte: 1}}
	allowed := []string{"ollama", "backend", "backends", "endpoints", "options", "limits", "price"}
	err := p.mapping(n, field, allowed, func(key string, _, v *yaml.Node) error {
		var err error
		switch key {
		case "ollama":
			m.Ollama, err = p.str(v, field+".ollama")
		case "backend": // one backend: the shorthand of backends: [name]
			if m.Backends != nil {
				return p.errf(v, field+".backend", "give backend or backends, not both")
			}
			var name string
			if name, err = p.str(v, field+".backend"); err == nil {
				m.Backends, err = []string{name}, p.backendNames(c, v, field+".backend", name)
			}
		case "backends":
			if m.Backends != nil {
				return p.errf(v, field+".backends", "give backend or backends, not both")
			}
			if m.Backends, err = p.strList(v, field+".backends"); err == nil && len(m.Backends) == 0 {
				err = p.errf(v, field+".backends", "must name at least one backend (leave it out for all)")
			}
			for i, name := range m.Backends {
				if err == nil {
					err = p.backendNames(c, v.Content[i], fmt.Sprintf("%s.backends[%d]", field, i), name)
				}
			}
		case "endpoints":
			m.Endpoints, err = p.endpoints(v, field+".endpoints")
		case "options":
			m.Options, err = p.options(v, field+".options")
		case "limits":
			err = p.limits(v, field+".limits", &m.Limits)
		case "price":
			m.Price, err = p.price(v, field+".price")
		}
		return err
	})
	if err != nil {
		return m, err
	}
	if m.Ollama == "" {
		return m, p.errf(n, field+".ollama", "is required (the model name Ollama runs, e.g. llama3.2:3b)")
	}
	if len(m.Endpoints) == 0 {
		return m, p.errf(n, field+".endpoints", "is required (any of generate, embed, predict)")
	}
	return m, nil
}

// backendNames checks that name is a backend of c.
func (p *parser) backendNames(c *Catalog, n *yaml.Node, field, name string) error {
	if _, ok := c.Backend(name); !ok {
		return p.errf(n, field, "no backend named %q", name)
	}
	return nil
}

func (p *parser) endpoints(n *yaml.Node, field string) ([]Endpoint, error) {
	list, err := p.strList(n, field)
	if err != nil {
		return nil, err
	}
	out := make([]Endpoint, 0, len(list))
	for i, s := range list {
		e := Endpoint(s)
		if e != EndpointGenerate && e != EndpointEmbed && e != EndpointPredict {
			return nil, p.errf(n.Content[i], fmt.Sprintf("%s[%d]", field, i), "unknown endpoint %q (want generate, embed or predict)", s)
		}
		out = append(out, e)
	}
	return out, nil
}

func (p *parser) options(n *yaml.Node, field string) (map[string]any, error) {
	var raw map[string]any
	if err := n.Decode(&raw); err != nil {
		return nil, p.errf(n, field, "must be a mapping of Ollama options")
	}
	opts, err := CheckOptions(raw)
	if err != nil {
		var ie *InvalidError
		if errors.As(err, &ie) {
			name := strings.TrimPrefix(ie.Field, "options.")
			return nil, p.errf(valueOf(n, name), field+"."+name, "%s", ie.Reason)
		}
		return nil, p.errf(n, field, "%v", err)
	}
	return opts, nil
}

// valueOf returns the value node of key in mapping n, or n itself when the
// key is not there, so that an error points at the offending line.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return n
}

func (p *parser) limits(n *yaml.Node, field string, l *ModelLimits) error {
	return p.mapping(n, field, []string{"max_num_predict", "max_num_ctx", "max_keep_alive", "max_inputs", "prompt_overhead", "prompt_tokens_per_byte"}, func(key string, _, v *yaml.Node) error {
		var err error
		switch key {
		case "prompt_tokens_per_byte":
			l.PromptTokensPerByte, err = p.positiveInt(v, field+"."+key)
		case "prompt_overhead":
			l.PromptOverhead, err = p.positiveInt(v, field+"."+key)
		case "max_num_predict":
			l.MaxNumPredict, err = p.positiveInt(v, field+"."+key)
		case "max_num_ctx":
			l.MaxNumCtx, err = p.positiveInt(v, field+"."+key)
		case "max_inputs":
			l.MaxInputs, err = p.positiveInt(v, field+"."+key)
		case "max_keep_alive":
			l.MaxKeepAlive, err = p.duration(v, field+"."+key)
		}
		return err
	})
}

func (p *parser) price(n *yaml.Node, field string) (Price, error) {
	var pr Price
	err := p.mapping(n, field, []string{"input_per_1k", "output_per_1k"}, func(key string, _, v *yaml.Node) error {
		micros, err := tollgate.ParseMoney(v.Value)
		if err != nil || v.Kind != yaml.ScalarNode || strings.ContainsAny(v.Value, "eE+") { // plain decimals only
			return p.errf(v, field+"."+key, "must be a non-negative decimal with at most 6 decimal places (got %q)", v.Value)
		}
		if key == "input_per_1k" {
			pr.InputPer1K = micros
		} else {
			pr.OutputPer1K = micros
		}
		return nil
	})
	return pr, err
}

func (p *parser) task(n *yaml.Node, field string, c *Catalog) (Task, error) {
	var t Task
	modelNode := n
	err := p.mapping(n, field, []string{"model", "labels", "instruction"}, func(key string, _, v *yaml.Node) error {
		var err error
		switch key {
		case "model":
			modelNode = v
			t.Model, err = p.str(v, field+".model")
		case "labels":
			t.Labels, err = p.strList(v, field+".labels")
			if err == nil {
				if err := CheckLabels(t.Labels); err != nil {
					ie := err.(*InvalidError)
					at := v
					var i int
					if _, scanErr := fmt.Sscanf(ie.Field, "labels[%d]", &i); scanErr == nil && i < len(v.Content) {
						at = v.Content[i]
					}
					return p.errf(at, field+"."+ie.Field, "%s", ie.Reason)
				}
			}
		case "instruction":
			t.Instruction, err = p.str(v, field+".instruction")
		}
		return err
	})
	if err != nil {
		return t, err
	}
	if t.Labels == nil {
		return t, p.errf(n, field+".labels", "is required and must not be empty")
	}
	m, ok := c.Models[t.Model]
	switch {
	case t.Model == "":
		return t, p.errf(n, field+".model", "is required")
	case !ok:
		return t, p.errf(modelNode, field+".model", "no model named %q in models", t.Model)
	case !m.Serves(EndpointPredict):
		return t, p.errf(modelNode, field+".model", "model %q does not list predict in its endpoints", t.Model)
	}
	return t, nil
}

func (p *parser) plan(n *yaml.Node, field string) (Plan, error) {
	var pl Plan
	pl.Weight = 1
	keys := []string{"requests_per_second", "burst", "tokens_per_minute", "max_concurrent", "monthly_tokens", "monthly_requests", "monthly_budget", "max_num_predict", "max_num_ctx", "weight"}
	err := p.mapping(n, field, keys, func(key string, _, v *yaml.Node) error {
		f := field + "." + key
		if key == "monthly_budget" {
			micros, err := tollgate.ParseMoney(v.Value)
			if err != nil || v.Kind != yaml.ScalarNode || strings.ContainsAny(v.Value, "eE+") {
				return p.errf(v, f, "must be a non-negative decimal amount in the catalog's currency with at most 6 decimal places (got %q)", v.Value)
			}
			pl.Limits.MonthlyBudget = micros
			return nil
		}
		if key == "requests_per_second" {
			var x float64
			if err := v.Decode(&x); err != nil || !(x >= 0) || math.IsInf(x, 0) {
				return p.errf(v, f, "must be a finite, non-negative number")
			}
			if x > 0 && x < tollgate.MinRequestsPerSecond {
				return p.errf(v, f, "must be 0 (no rate limit) or at least %g (one request per %g s); for fewer requests set monthly_requests",
					tollgate.MinRequestsPerSecond, 1/tollgate.MinRequestsPerSecond)
			}
			pl.Limits.RequestsPerSecond = x
			return nil
		}
		if key == "weight" {
			var err error
			pl.Weight, err = p.positiveInt(v, f)
			return err
		}
		var x int64
		if !isInt(v) || v.Decode(&x) != nil || x < 0 {
			return p.errf(v, f, "must be a non-negative integer")
		}
		switch key {
		case "burst":
			pl.Limits.Burst = int(x)
		case "tokens_per_minute":
			pl.Limits.TokensPerMinute = x
		case "max_concurrent":
			pl.Limits.MaxConcurrent = int(x)
		case "monthly_tokens":
			pl.Limits.MonthlyTokens = x
		case "monthly_requests":
			pl.Limits.MonthlyRequests = x
		case "max_num_predict":
			pl.MaxNumPredict = int(x)
		case "max_num_ctx":
			pl.MaxNumCtx = int(x)
		}
		return nil
	})
	return pl, err
}

func (p *parser) str(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || strings.TrimSpace(n.Value) == "" {
		return "", p.errf(n, field, "must be a non-empty string")
	}
	return n.Value, nil
}

func (p *parser) strList(n *yaml.Node, field string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, field, "must be a list")
	}
	out := make([]string, 0, len(n.Content))
	for i, v := range n.Content {
		s, err := p.str(v, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) positiveInt(n *yaml.Node, field string) (int, error) {
	var x int
	if !isInt(n) || n.Decode(&x) != nil || x <= 0 {
		return 0, p.errf(n, field, "must be a positive integer")
	}
	return x, nil
}

// isInt reports whether n is an integer scalar: yaml.v3 would otherwise
// decode 1.5 into an int as 1 without a word.
func isInt(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int"
}

func (p *parser) duration(n *yaml.Node, field string) (time.Duration, error) {
	d, err := time.ParseDuration(n.Value)
	if err != nil || d <= 0 {
		return 0, p.errf(n, field, "must be a positive duration like 30s or 5m (got %q)", n.Value)
	}
	return d, nil
}

func (p *parser) url(n *yaml.Node, field string) (string, error) {
	s, err := p.str(n, field)
	if err != nil {
		return "", err
	}
	u, err := ParseOllamaURL(s)
	if err != nil {
		return "", p.errf(n, field, "%v", err)
	}
	return u, nil
}

// ParseOllamaURL normalises an Ollama address the way OLLAMA_HOST is written:
// "host", "host:port" or "http(s)://host:port[/path]". A missing scheme means
// http and a missing port means 11434, except for https: Ollama serves no
// TLS itself, so an https address is a reverse proxy and, as for
// OLLAMA_HOST, its default port is 443. Userinfo, queries and fragments are
// rejected so that no credential or stray text ends up in error messages.
func ParseOllamaURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	// The address is not quoted back: it may hold a password.
	switch {
	case err != nil:
		return "", fmt.Errorf("is not a URL (want http://host:port)")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("must be scheme://host:port with no user, query or fragment")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("scheme must be http or https (got %q)", u.Scheme)
	case u.Hostname() == "":
		return "", fmt.Errorf("has no host (want http://host:port)")
	}
	if u.Port() == "" {
		port := "11434"
		if u.Scheme == "https" {
			port = "443"
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
