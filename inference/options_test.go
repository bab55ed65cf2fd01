package inference

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCheckOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string // JSON, decoded as a request body is
		want  map[string]any
		field string // set when an error is expected
		err   string
	}{
		{name: "none", in: `{}`, want: nil},
		{name: "normalised", in: `{"temperature": 0.5, "num_predict": 100, "seed": -5, "top_k": 40, "stop": ["\n", "###"], "top_p": 1, "presence_penalty": -1.5}`,
			want: map[string]any{"temperature": 0.5, "num_predict": 100, "seed": -5, "top_k": 40, "stop": []string{"\n", "###"}, "top_p": 1.0, "presence_penalty": -1.5}},
		{name: "integer written as float", in: `{"num_ctx": 4096.0}`, want: map[string]any{"num_ctx": 4096}},
		{name: "stop as a string", in: `{"stop": "END"}`, want: map[string]any{"stop": []string{"END"}}},
		{name: "null is left out", in: `{"temperature": null, "seed": 1}`, want: map[string]any{"seed": 1}},
		{name: "num_predict -1 and -2 are Ollama's", in: `{"num_predict": -2, "num_keep": -1, "repeat_last_n": -1}`, want: map[string]any{"num_predict": -2, "num_keep": -1, "repeat_last_n": -1}},
		{name: "range edges", in: `{"temperature": 0, "top_k": 1000, "min_p": 0, "typical_p": 1, "repeat_penalty": 100, "frequency_penalty": -100}`,
			want: map[string]any{"temperature": 0.0, "top_k": 1000, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 100.0, "frequency_penalty": -100.0}},

		{name: "num_gpu is the operator's", in: `{"num_gpu": 99}`, field: "options.num_gpu", err: "is not an option a request may set (allowed: frequency_penalty, min_p, num_ctx,"},
		{name: "unknown option", in: `{"mirostat": 2}`, field: "options.mirostat", err: "is not an option a request may set"},
		{name: "temperature as string", in: `{"temperature": "hot"}`, field: "options.temperature", err: "must be a number"},
		{name: "temperature as bool", in: `{"temperature": true}`, field: "options.temperature", err: "must be a number"},
		{name: "temperature too high", in: `{"temperature": 100.5}`, field: "options.temperature", err: "must be between 0 and 100"},
		{name: "temperature negative", in: `{"temperature": -0.1}`, field: "options.temperature", err: "must be between 0 and 100"},
		{name: "top_p above one", in: `{"top_p": 1.01}`, field: "options.top_p", err: "must be between 0 and 1"},
		{name: "top_k too high", in: `{"top_k": 1001}`, field: "options.top_k", err: "must be between 0 and 1000"},
		{name: "num_predict fraction", in: `{"num_predict": 1.5}`, field: "options.num_predict", err: "must be an integer"},
		{name: "num_predict as string", in: `{"num_predict": "10"}`, field: "options.num_predict", err: "must be an integer"},
		{name: "num_predict below -2", in: `{"num_predict": -3}`, field: "options.num_predict", err: "must be between -2 and"},
		{name: "num_ctx zero", in: `{"num_ctx": 0}`, field: "options.num_ctx", err: "must be between 1 and"},
		{name: "num_ctx beyond int32", in: `{"num_ctx": 1e12}`, field: "options.num_ctx", err: "must be between 1 and 2.147483647e+09"},
		{name: "seed beyond int32", in: `{"seed": -3e9}`, field: "options.seed", err: "must be between"},
		{name: "stop as number", in: `{"stop": 5}`, field: "options.stop", err: "must be an array of strings"},
		{name: "stop with a number", in: `{"stop": ["a", 1]}`, field: "options.stop", err: "must be an array of non-empty strings"},
		{name: "stop with empty string", in: `{"stop": [""]}`, field: "options.stop", err: "must be an array of non-empty strings"},
		{name: "stop too long", in: `{"stop": ["` + strings.Repeat("x", 257) + `"]}`, field: "options.stop", err: "up to 256 bytes"},
		{name: "stop too many", in: `{"stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, field: "options.stop", err: "at most 16 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var raw map[string]any
			if err := json.Unmarshal([]byte(tc.in), &raw); err != nil {
				t.Fatal(err)
			}
			got, err := CheckOptions(raw)
			if tc.field == "" {
				if err != nil || !reflect.DeepEqual(got, tc.want) {
					t.Errorf("CheckOptions(%s) = %#v, %v; want %#v", tc.in, got, err, tc.want)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Field != tc.field || !strings.Contains(inv.Reason, tc.err) {
				t.Fatalf("CheckOptions(%s) = %v, %v; want *InvalidError %s: ...%s...", tc.in, got, err, tc.field, tc.err)
			}
			if got != nil {
				t.Errorf("CheckOptions returned options with its error: %v", got)
			}
			if want := tc.field + ": " + inv.Reason; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

// Values that JSON cannot carry but YAML or Go callers can.
func TestCheckOptionsNonJSONValues(t *testing.T) {
	for _, tc := range []struct {
		in    map[string]any
		field string
	}{
		{map[string]any{"temperature": math.NaN()}, "options.temperature"},
		{map[string]any{"temperature": math.Inf(1)}, "options.temperature"},
		{map[string]any{"num_ctx": math.Inf(1)}, "options.num_ctx"},
		{map[string]any{"num_predict": math.NaN()}, "options.num_predict"},
		{map[string]any{"num_predict": uint64(5)}, "options.num_predict"},
		{map[string]any{"stop": []string{"typed slice"}}, "options.stop"},
	} {
		_, err := CheckOptions(tc.in)
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Field != tc.field {
			t.Errorf("CheckOptions(%v) error = %v, want *InvalidError for %s", tc.in, err, tc.field)
		}
	}
	got, err := CheckOptions(map[string]any{"num_ctx": int64(2048), "temperature": 1})
	if want := map[string]any{"num_ctx": 2048, "temperature": 1.0}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("CheckOptions(int64, int) = %#v, %v; want %#v", got, err, want)
	}
}

// FuzzCheckOptions checks that whatever JSON a client sends, CheckOptions
// either refuses it with an *InvalidError naming one of the options sent, or
// returns only allowed options, normalised and within their ranges.
func FuzzCheckOptions(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"temperature": 0.7}`, `{"num_predict": -1, "stop": "x"}`, `{"stop": ["a", "b"]}`,
		`{"num_gpu": 1}`, `{"top_k": 1e400}`, `{"seed": -2147483648}`, `{"num_ctx": 1.0000001}`,
		`{"top_p": null, "min_p": 0}`, `{"stop": [null]}`, `{"repeat_penalty": -0}`, `{"num_keep": 2147483647.5}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var raw map[string]any
		if json.Unmarshal([]byte(in), &raw) != nil {
			return
		}
		out, err := CheckOptions(raw)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("error %v (%T) is not an *InvalidError", err, err)
			}
			name, ok := strings.CutPrefix(inv.Field, "options.")
			if _, sent := raw[name]; !ok || !sent || inv.Reason == "" {
				t.Fatalf("error %q does not name an option that was sent", err)
			}
			return
		}
		for name, v := range out {
			spec, ok := requestOptions[name]
			if !ok {
				t.Fatalf("returned option %q that a request may not set", name)
			}
			if raw[name] == nil {
				t.Fatalf("returned option %q that was not sent", name)
			}
			switch spec.kind {
			case optInt:
				n, ok := v.(int)
				if !ok || float64(n) < spec.min || float64(n) > spec.max {
					t.Fatalf("%s = %#v, want an int in [%g, %g]", name, v, spec.min, spec.max)
				}
			case optFloat:
				x, ok := v.(float64)
				if !ok || math.IsNaN(x) || x < spec.min || x > spec.max {
					t.Fatalf("%s = %#v, want a float64 in [%g, %g]", name, v, spec.min, spec.max)
				}
			case optStrings:
				list, ok := v.([]string)
				if !ok || len(list) > int(spec.max) {
					t.Fatalf("%s = %#v, want at most %g strings", name, v, spec.max)
				}
				for _, s := range list {
					if s == "" || len(s) > 256 {
						t.Fatalf("%s holds %q", name, s)
					}
				}
			}
		}
		for name, v := range raw {
			if _, kept := out[name]; !kept && v != nil {
				t.Fatalf("option %q = %v was dropped without an error", name, v)
			}
		}
		// The result must encode for Ollama.
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("options do not encode: %v", err)
		}
	})
}

func TestEffectiveOptions(t *testing.T) {
	limits := ModelLimits{MaxNumPredict: 256, MaxNumCtx: 4096}
	for _, tc := range []struct {
		name   string
		model  Model
		req    map[string]any
		want   map[string]any
		reqNot map[string]any // the request map must not be changed
	}{
		{name: "num_predict defaults to the limit", model: Model{Limits: limits},
			want: map[string]any{"num_predict": 256}},
		{name: "num_predict under the limit kept", model: Model{Limits: limits}, req: map[string]any{"num_predict": 10},
			want: map[string]any{"num_predict": 10}},
		// Ollama's runners read num_predict 0 as "no limit" (v0.10.1,
		// runner.go: numPredict > 0 && ...), so 0 must not slip past the cap.
		{name: "num_predict 0 becomes the cap", model: Model{Limits: limits}, req: map[string]any{"num_predict": 0},
			want: map[string]any{"num_predict": 256}},
		{name: "num_predict over the limit clamped", model: Model{Limits: limits}, req: map[string]any{"num_predict": 100000},
			want: map[string]any{"num_predict": 256}},
		{name: "num_predict -1 (infinite) clamped", model: Model{Limits: limits}, req: map[string]any{"num_predict": -1},
			want: map[string]any{"num_predict": 256}},
		{name: "num_predict -2 (fill context) clamped", model: Model{Limits: limits}, req: map[string]any{"num_predict": -2},
			want: map[string]any{"num_predict": 256}},
		{name: "model default num_predict over the limit clamped", model: Model{Options: map[string]any{"num_predict": 9999}, Limits: limits},
			want: map[string]any{"num_predict": 256}},
		{name: "num_ctx clamped", model: Model{Limits: limits}, req: map[string]any{"num_ctx": 131072},
			want: map[string]any{"num_predict": 256, "num_ctx": 4096}},
		{name: "num_ctx under the limit kept", model: Model{Limits: limits}, req: map[string]any{"num_ctx": 2048},
			want: map[string]any{"num_predict": 256, "num_ctx": 2048}},
		{name: "no num_ctx limit: a request may not raise the model's", model: Model{Limits: ModelLimits{MaxNumPredict: 256}}, req: map[string]any{"num_ctx": 131072},
			want: map[string]any{"num_predict": 256}},
		{name: "no num_ctx limit: the model's own num_ctx is the ceiling", model: Model{Options: map[string]any{"num_ctx": 8192}, Limits: ModelLimits{MaxNumPredict: 256}}, req: map[string]any{"num_ctx": 131072},
			want: map[string]any{"num_predict": 256, "num_ctx": 8192}},
		{name: "no num_ctx limit: lowering the model's is fine", model: Model{Options: map[string]any{"num_ctx": 8192}, Limits: ModelLimits{MaxNumPredict: 256}}, req: map[string]any{"num_ctx": 1024},
			want: map[string]any{"num_predict": 256, "num_ctx": 1024}},
		{name: "request overrides model defaults", model: Model{Options: map[string]any{"temperature": 0.8, "top_k": 40}, Limits: limits}, req: map[string]any{"temperature": 0.0},
			want: map[string]any{"temperature": 0.0, "top_k": 40, "num_predict": 256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			modelOpts := clone(tc.model.Options)
			reqOpts := clone(tc.req)
			got := effectiveOptions(tc.model, tc.req)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("effectiveOptions = %v, want %v", got, tc.want)
			}
			if !reflect.DeepEqual(tc.model.Options, modelOpts) || !reflect.DeepEqual(tc.req, reqOpts) {
				t.Errorf("effectiveOptions changed its inputs: model %v, request %v", tc.model.Options, tc.req)
			}
		})
	}
}

func clone(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestParseKeepAlive(t *testing.T) {
	const max = 30 * time.Minute
	for _, tc := range []struct {
		name string
		in   any
		want time.Duration
		null bool   // want nil: Ollama's default
		err  string // want an *InvalidError for keep_alive
	}{
		{name: "absent", in: nil, null: true},
		{name: "duration string", in: "5m", want: 5 * time.Minute},
		{name: "seconds", in: 90.0, want: 90 * time.Second},
		{name: "fractional seconds", in: 0.5, want: 500 * time.Millisecond},
		{name: "zero unloads", in: 0.0, want: 0},
		{name: "zero string unloads", in: "0s", want: 0},
		{name: "clamped string", in: "24h", want: max},
		{name: "clamped number", in: 86400.0, want: max},
		{name: "exactly max", in: "30m", want: max},
		{name: "negative string (forever) refused", in: "-1s", err: "must not be negative (models stay loaded at most 30m0s)"},
		{name: "negative number (forever) refused", in: -1.0, err: "must not be negative"},
		{name: "not a duration", in: "soon", err: `must be a duration like "5m"`},
		{name: "bare number string", in: "300", err: `must be a duration like "5m"`},
		{name: "bool", in: true, err: "must be a duration"},
		{name: "NaN", in: math.NaN(), err: "must be a number of seconds"},
		{name: "huge", in: 1e12, err: "must be a number of seconds"},
		{name: "infinite", in: math.Inf(-1), err: "must be a number of seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeepAlive(tc.in, max)
			switch {
			case tc.err != "":
				var inv *InvalidError
				if !errors.As(err, &inv) || inv.Field != "keep_alive" || !strings.Contains(inv.Reason, tc.err) {
					t.Errorf("ParseKeepAlive(%v) = %v, %v; want keep_alive error %q", tc.in, got, err, tc.err)
				}
			case err != nil:
				t.Errorf("ParseKeepAlive(%v) error %v", tc.in, err)
			case tc.null != (got == nil):
				t.Errorf("ParseKeepAlive(%v) = %v, want nil=%v", tc.in, got, tc.null)
			case got != nil && *got != tc.want:
				t.Errorf("ParseKeepAlive(%v) = %v, want %v", tc.in, *got, tc.want)
			}
		})
	}
}

func TestCheckLabels(t *testing.T) {
	many := make([]string, 101)
	for i := range many {
		many[i] = strings.Repeat("x", i+1)
	}
	for _, tc := range []struct {
		labels []string
		field  string // "" = valid
		reason string
	}{
		{labels: []string{"positive", "negative"}},
		{labels: []string{strings.Repeat("y", 100)}},
		{labels: many[:100]},
		{labels: nil, field: "labels", reason: "at least one label"},
		{labels: []string{}, field: "labels", reason: "at least one label"},
		{labels: many, field: "labels", reason: "at most 100 labels"},
		{labels: []string{"a", ""}, field: "labels[1]", reason: "non-empty string"},
		{labels: []string{"\t "}, field: "labels[0]", reason: "non-empty string"},
		{labels: []string{strings.Repeat("y", 101)}, field: "labels[0]", reason: "at most 100 bytes"},
		{labels: []string{"a", "b", "a"}, field: "labels[2]", reason: `duplicates label "a"`},
	} {
		err := CheckLabels(tc.labels)
		var inv *InvalidError
		if tc.field == "" && err != nil || tc.field != "" && (!errors.As(err, &inv) || inv.Field != tc.field || !strings.Contains(inv.Reason, tc.reason)) {
			t.Errorf("CheckLabels(%d labels %.30q) = %v; want field %q reason %q", len(tc.labels), tc.labels, err, tc.field, tc.reason)
		}
	}
}

// TestOptionKinds: handlers read a string as a number exactly for the
// options that take one.
func TestOptionKinds(t *testing.T) {
	for name, want := range map[string][2]bool{ // known, numeric
		"temperature": {true, true}, "num_predict": {true, true}, "seed": {true, true},
		"stop": {true, false}, "num_gpu": {false, false}, "": {false, false},
	} {
		if got := [2]bool{IsRequestOption(name), IsNumericOption(name)}; got != want {
			t.Errorf("%q: known, numeric = %v, want %v", name, got, want)
		}
	}
}
