package inference

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

type optKind int

const (
	optInt optKind = iota
	optFloat
	optStrings
)

type optSpec struct {
	kind     optKind
	min, max float64
}

// requestOptions are the Ollama options a caller may set. Everything else
// (num_gpu, num_thread, use_mmap, ...) shapes the host, not the answer, and
// belongs to the operator.
var requestOptions = map[string]optSpec{
	"num_predict":       {optInt, -2, math.MaxInt32},
	"num_ctx":           {optInt, 1, math.MaxInt32},
	"num_keep":          {optInt, -1, math.MaxInt32},
	"seed":              {optInt, math.MinInt32, math.MaxInt32},
	"top_k":             {optInt, 0, 1000},
	"repeat_last_n":     {optInt, -1, math.MaxInt32},
	"temperature":       {optFloat, 0, 100},
	"top_p":             {optFloat, 0, 1},
	"min_p":             {optFloat, 0, 1},
	"typical_p":         {optFloat, 0, 1},
	"repeat_penalty":    {optFloat, 0, 100},
	"presence_penalty":  {optFloat, -100, 100},
	"frequency_penalty": {optFloat, -100, 100},
	"stop":              {optStrings, 0, 16},
}

// CheckOptions validates caller-supplied Ollama options and returns a
// normalised copy (integers as int, floats as float64, stop as []string).
// Errors are *InvalidError naming the option, e.g. "options.temperature".
// The same rules apply to a model's default options in models.yaml.
func CheckOptions(raw map[string]any) (map[string]any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(raw))
	for name, v := range raw {
		field := "options." + name
		spec, ok := requestOptions[name]
		if !ok {
			return nil, &InvalidError{Field: field, Reason: "is not an option a request may set (allowed: " + allowedOptions() + ")"}
		}
		if v == nil {
			continue
		}
		norm, err := checkOption(spec, v)
		if err != nil {
			return nil, &InvalidError{Field: field, Reason: err.Error()}
		}
		out[name] = norm
	}
	return out, nil
}

func checkOption(spec optSpec, v any) (any, error) {
	switch spec.kind {
	case optStrings:
		list, ok := v.([]any)
		if !ok {
			if s, isStr := v.(string); isStr {
				list = []any{s}
			} else {
				return nil, fmt.Errorf("must be an array of strings")
			}
		}
		if len(list) > int(spec.max) {
			return nil, fmt.Errorf("must have at most %d entries", int(spec.max))
		}
		out := make([]string, 0, len(list))
		for _, x := range list {
			s, ok := x.(string)
			if !ok || s == "" || len(s) > 256 {
				return nil, fmt.Errorf("must be an array of non-empty strings up to 256 bytes")
			}
			out = append(out, s)
		}
		return out, nil
	case optInt:
		f, ok := number(v)
		if !ok || f != math.Trunc(f) {
			return nil, fmt.Errorf("must be an integer")
		}
		if f < spec.min || f > spec.max {
			return nil, fmt.Errorf("must be between %g and %g", spec.min, spec.max)
		}
		return int(f), nil
	default:
		f, ok := number(v)
		if !ok || math.IsNaN(f) {
			return nil, fmt.Errorf("must be a number")
		}
		if f < spec.min || f > spec.max {
			return nil, fmt.Errorf("must be between %g and %g", spec.min, spec.max)
		}
		return f, nil
	}
}

// IsRequestOption reports whether a request may set the Ollama option name.
func IsRequestOption(name string) bool {
	_, ok := requestOptions[name]
	return ok
}

// IsNumericOption reports whether name is a request option that takes a
// number (every one but stop). Handlers use it to read "0.2" from a form or
// from JSON that types every value as a string; CheckOptions itself stays
// strict and takes only numbers.
func IsNumericOption(name string) bool {
	spec, ok := requestOptions[name]
	return ok && spec.kind != optStrings
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	default:
		return 0, false
	}
}

func allowedOptions() string {
	names := make([]string, 0, len(requestOptions))
	for n := range requestOptions {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// effectiveOptions merges the model's defaults with the request's options and
// clamps the GPU-costly ones to the model's limits: num_predict defaults to
// and never exceeds MaxNumPredict (Ollama itself has no output cap), num_ctx
// never exceeds MaxNumCtx. When MaxNumCtx is 0 the model's own context
// applies (its num_ctx option, else Ollama's default) and a request may not
// raise it: without a known ceiling a request's num_ctx is dropped.
func effectiveOptions(m Model, req map[string]any) map[string]any {
	out := make(map[string]any, len(m.Options)+len(req)+1)
	for k, v := range m.Options {
		out[k] = v
	}
	for k, v := range req {
		out[k] = v
	}
	limit := m.Limits.MaxNumPredict
	if n, ok := out["num_predict"].(int); !ok || n <= 0 || n > limit { // Ollama reads 0 as "no limit"
		out["num_predict"] = limit
	}
	if n, ok := out["num_ctx"].(int); ok {
		ctxMax := m.Limits.MaxNumCtx
		if ctxMax == 0 {
			ctxMax, _ = m.Options["num_ctx"].(int)
		}
		switch {
		case ctxMax == 0:
			delete(out, "num_ctx")
		case n > ctxMax:
			out["num_ctx"] = ctxMax
		}
	}
	return out
}

// ParseKeepAlive reads a request's keep_alive ("5m", "30s", seconds as a
// number, 0 to unload, negative is refused) and clamps it to max.
func ParseKeepAlive(v any, max time.Duration) (*time.Duration, error) {
	var d time.Duration
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		var err error
		if d, err = time.ParseDuration(x); err != nil {
			return nil, &InvalidError{Field: "keep_alive", Reason: "must be a duration like \"5m\" or a number of seconds"}
		}
	case float64:
		if math.IsNaN(x) || math.Abs(x) > 1e9 {
			return nil, &InvalidError{Field: "keep_alive", Reason: "must be a number of seconds"}
		}
		d = time.Duration(x * float64(time.Second))
	default:
		return nil, &InvalidError{Field: "keep_alive", Reason: "must be a duration like \"5m\" or a number of seconds"}
	}
	if d < 0 {
		return nil, &InvalidError{Field: "keep_alive", Reason: "must not be negative (models stay loaded at most " + max.String() + ")"}
	}
	if d > max {
		d = max
	}
	return &d, nil
}

// CheckLabels validates a list of predict labels: 1 to 100 distinct,
// non-empty strings of at most 100 bytes.
func CheckLabels(labels []string) error {
	if len(labels) == 0 {
		return &InvalidError{Field: "labels", Reason: "must list at least one label"}
	}
	if len(labels) > 100 {
		return &InvalidError{Field: "labels", Reason: "must list at most 100 labels"}
	}
	seen := make(map[string]bool, len(labels))
	for i, l := range labels {
		if strings.TrimSpace(l) == "" || len(l) > 100 {
			return &InvalidError{Field: fmt.Sprintf("labels[%d]", i), Reason: "must be a non-empty string of at most 100 bytes"}
		}
		if seen[l] {
			return &InvalidError{Field: fmt.Sprintf("labels[%d]", i), Reason: fmt.Sprintf("duplicates label %q", l)}
		}
		seen[l] = true
	}
	return nil
}
