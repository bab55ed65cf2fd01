package handlers

// Bodies from no-code tools. Zapier's "Webhooks by Zapier" posts form fields
// by default, and in JSON mode types every mapped value as a string
// ("stream":"false", "options":{"temperature":"0.2"}); Make posts forms or
// raw JSON. The native /generate, /embed and /predict accept both: a form is
// turned into the JSON object it stands for and decoded by decodeBytes, so
// validation and its messages stay one code path; the flex* types below read
// a string holding a number or a boolean where one is expected. The
// coercion lives here, at the decoding layer: inference.CheckOptions and the
// gateway stay strict and only ever see typed values.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/inference"
)

const (
	formURLEncoded = "application/x-www-form-urlencoded"
	formMultipart  = "multipart/form-data"
)

// decodeNative reads the body of a native /generate, /embed or /predict
// into v: JSON (strictly, as decodeJSON), or form fields when the
// Content-Type says so. A form Content-Type with a body that is a JSON
// object is read as JSON: curl -d '{...}' sends exactly that.
func decodeNative(c *gin.Context, v any) error {
	body, err := requestBody(c)
	if err != nil {
		return err
	}
	ct := c.GetHeader("Content-Type")
	if isFormType(ct) && !looksLikeJSONObject(body) {
		return decodeFormBytes(body, ct, v)
	}
	err = decodeBytes(body, v)
	if ae, ok := err.(*tollgate.Error); ok && !isJSONType(ct) && !json.Valid(body) {
		ae.Message += " (send JSON with Content-Type: application/json, or form fields with Content-Type: " + formURLEncoded + ")"
	}
	return err
}

func isFormType(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == formURLEncoded || mt == formMultipart
}

func looksLikeJSONObject(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// decodeFormBytes is decodeNative's form reader, separate so it can be
// fuzzed: it parses the form (URL-encoded or multipart, as ct says), turns
// it into the JSON object v's fields describe and decodes that into v.
func decodeFormBytes(body []byte, ct string, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("request body is empty; send form fields or a JSON object")
	}
	values, err := parseForm(body, ct)
	if err != nil {
		return err
	}
	if len(values) == 0 { // "&", or a multipart body with no parts
		return badRequest("request body is empty; send form fields or a JSON object")
	}
	obj, err := formToJSON(values, formFieldsOf(reflect.TypeOf(v).Elem()))
	if err != nil {
		return err
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return badRequest("the form fields do not make a JSON object: %v", err)
	}
	return decodeBytes(data, v)
}

// parseForm parses an application/x-www-form-urlencoded or
// multipart/form-data body. The body is already size-limited, so a
// multipart part is read whole.
func parseForm(body []byte, ct string) (url.Values, error) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != formMultipart {
		values, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, badRequest("request body is not valid form encoding (%s): %v", formURLEncoded, err)
		}
		return values, nil
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, badRequest("the Content-Type %s has no boundary", formMultipart)
	}
	values := url.Values{}
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return values, nil
		}
		if err != nil {
			return nil, badRequest("request body is not valid %s: %v", formMultipart, err)
		}
		name := p.FormName()
		if name == "" {
			return nil, badRequest("request body is not valid %s: a part has no form field name", formMultipart)
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, badRequest("request body is not valid %s: %v", formMultipart, err)
		}
		values.Add(name, string(data))
	}
}

// formKind is how a form field's text becomes a JSON value.
type formKind int

const (
	formScalar  formKind = iota // one string; the field's type reads numbers and booleans from it
	formList                    // repeated fields make an array, one field a string (stringOrList, flexList)
	formJSON                    // JSON text (messages)
	formFormat                  // JSON text, or else a plain string ("json")
	formOptions                 // options.NAME or NAME; or "options" as JSON text
)

type formField struct {
	name string
	kind formKind
}

var (
	typeStringOrList = reflect.TypeFor[stringOrList]()
	typeFlexList     = reflect.TypeFor[flexList]()
	typeFlexOptions  = reflect.TypeFor[flexOptions]()
	typeRawMessage   = reflect.TypeFor[json.RawMessage]()
)

// formFieldsOf lists a request struct's JSON fields, in order, with how a
// form spells each.
func formFieldsOf(t reflect.Type) []formField {
	var out []formField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		kind := formScalar
		switch {
		case f.Type == typeStringOrList || f.Type == typeFlexList:
			kind = formList
		case f.Type == typeFlexOptions:
			kind = formOptions
		case f.Type == typeRawMessage:
			kind = formFormat
		case f.Type.Kind() == reflect.Slice || f.Type.Kind() == reflect.Map:
			kind = formJSON
		}
		out = append(out, formField{name, kind})
	}
	return out
}

// formHint says how form fields are spelled, for an unknown field.
func formHint(fields []formField) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
		if f.kind == formOptions {
			names[i] = "options.temperature or temperature"
		}
	}
	return "form fields use the JSON names: " + strings.Join(names, ", ")
}

// formToJSON turns form values into the JSON object they stand for. A
// field with an empty value is left out (Zapier sends a mapped value that is
// blank in a run as an empty field). Fields are visited in sorted order, so
// the error for a form with several faults is always the same.
func formToJSON(values url.Values, fields []formField) (map[string]any, error) {
	obj := make(map[string]any, len(values))
	var (
		opts        map[string]any
		optsField   = ""
		optsAsJSON  = false
		keys        = make([]string, 0, len(values))
		byName      = make(map[string]formField, len(fields))
		optionsName string
	)
	for _, f := range fields {
		byName[f.name] = f
		if f.kind == formOptions {
			optionsName = f.name
		}
	}
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	setOption := func(form, name string, vals []string) error {
		if opts == nil {
			opts = map[string]any{}
		}
		if _, dup := opts[name]; dup {
			return withParam(badRequest("option %q is given twice (as %q and %q); give it once", name, optsField, form), optionsName+"."+name)
		}
		optsField = form
		if len(vals) == 1 {
			opts[name] = vals[0]
		} else {
			list := make([]any, len(vals))
			for i, v := range vals {
				list[i] = v
			}
			opts[name] = list // stop, given once per stop sequence
		}
		return nil
	}
	for _, k := range keys {
		vals := slices.DeleteFunc(slices.Clone(values[k]), func(s string) bool { return s == "" })
		if len(vals) == 0 {
			continue
		}
		f, known := byName[k]
		switch {
		case known && f.kind == formOptions:
			if len(vals) > 1 || !looksLikeJSONObject([]byte(vals[0])) || !json.Valid([]byte(vals[0])) {
				return nil, withParam(badRequest("field %q must be a JSON object as text, like {\"temperature\":0.2}; or send each option as its own field, like options.temperature=0.2", k), k)
			}
			optsAsJSON = true
			obj[k] = json.RawMessage(vals[0])
			continue
		case known:
		case optionsName != "" && strings.HasPrefix(k, optionsName+"."):
			if err := setOption(k, strings.TrimPrefix(k, optionsName+"."), vals); err != nil {
				return nil, err
			}
			continue
		case optionsName != "" && inference.IsRequestOption(k):
			if err := setOption(k, k, vals); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, withParam(badRequest("unknown field %q (%s)", k, formHint(fields)), k)
		}
		switch f.kind {
		case formList:
			if len(vals) == 1 {
				obj[k] = vals[0]
			} else {
				obj[k] = vals
			}
		case formJSON:
			if len(vals) > 1 || !json.Valid([]byte(vals[0])) {
				return nil, withParam(badRequest("field %q must be JSON text in one field, like [{\"role\":\"user\",\"content\":\"hi\"}]", k), k)
			}
			obj[k] = json.RawMessage(vals[0])
		case formFormat:
			if len(vals) > 1 {
				return nil, onceError(k, len(vals))
			}
			if json.Valid([]byte(vals[0])) {
				obj[k] = json.RawMessage(vals[0])
			} else {
				obj[k] = vals[0]
			}
		default:
			if len(vals) > 1 {
				return nil, onceError(k, len(vals))
			}
			obj[k] = vals[0]
		}
	}
	if opts != nil {
		if optsAsJSON {
			return nil, withParam(badRequest("options are given both as %q JSON text and as separate fields (%q); use one way", optionsName, optsField), optionsName)
		}
		obj[optionsName] = opts
	}
	return obj, nil
}

func onceError(field string, n int) error {
	return withParam(badRequest("field %q is given %d times; give it once", field, n), field)
}

// flexBool is a JSON boolean that also reads "true" and "false" (any case)
// and "" (false), as Zapier's JSON mode sends them.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch string(data) {
	case "true":
		*b = true
		return nil
	case "false", "null":
		*b = false
		return nil
	}
	var s string
	if json.Unmarshal(data, &s) == nil {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			*b = true
			return nil
		case "false", "":
			*b = false
			return nil
		}
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%q", s), Type: reflect.TypeFor[bool]()}
	}
	return &json.UnmarshalTypeError{Value: jsonValueKind(data), Type: reflect.TypeFor[bool]()}
}

// jsonValueKind names the kind of a JSON value, as json.UnmarshalTypeError's
// Value does.
func jsonValueKind(data []byte) string {
	if len(data) == 0 {
		return "nothing"
	}
	switch data[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	}
	return "number"
}

// flexList is a JSON array of strings, or one string of comma-separated
// items ("bug,feature", each trimmed): the labels of /predict. A label with
// a comma in it needs the array.
type flexList []string

func (l *flexList) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		*l = nil
		return nil
	}
	var list []string
	if len(data) > 0 && data[0] == '[' {
		if err := json.Unmarshal(data, &list); err != nil {
			return &fieldError{field: "labels", reason: "must be an array of strings or one comma-separated string"}
		}
		*l = list
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return &fieldError{field: "labels", reason: "must be an array of strings or one comma-separated string"}
	}
	if strings.TrimSpace(s) == "" {
		*l = nil
		return nil
	}
	for part := range strings.SplitSeq(s, ",") {
		list = append(list, strings.TrimSpace(part))
	}
	*l = list
	return nil
}

// flexOptions is the options object, whose numeric options may also be
// strings holding a JSON number ("0.2", "20"); an empty string leaves the
// option out. Anything else goes to inference.CheckOptions as sent.
type flexOptions map[string]any

func (o *flexOptions) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		*o = nil
		return nil
	}
	var m map[string]any
	if len(data) == 0 || data[0] != '{' || json.Unmarshal(data, &m) != nil {
		return &fieldError{field: "options", reason: "must be an object, like {\"temperature\":0.2}"}
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s, ok := m[k].(string)
		if !ok || !inference.IsNumericOption(k) {
			continue
		}
		s = strings.TrimSpace(s)
		if s == "" {
			delete(m, k)
			continue
		}
		f, ok := parseJSONNumber(s)
		if !ok {
			return &fieldError{field: "options." + k, reason: fmt.Sprintf("must be a number, not %q", s)}
		}
		m[k] = f
	}
	*o = m
	return nil
}

// parseJSONNumber reads s if it is a JSON number (no NaN, Inf, hex or
// underscores, as strconv.ParseFloat would allow).
func parseJSONNumber(s string) (float64, bool) {
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, false
	}
	var f float64
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		return 0, false
	}
	return f, true
}

// keepAliveValue reads keep_alive as sent, except that a string holding a
// number is that number of seconds ("300" from a form or Zapier's JSON).
func keepAliveValue(v any) any {
	s, ok := v.(string)
	if !ok {
		return v
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	if f, ok := parseJSONNumber(s); ok {
		return f
	}
	return v
}
