package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"reflect"
	"strings"
	"time"
	"tollgate"

	"github.com/gin-gonic/gin"
)

// decodeJSON reads the body into v strictly: one JSON object, no unknown
// fields (a typo like "promt" is an error, not a silent default), types as
// declared. Errors name the field at fault. The Content-Type is not
// enforced (curl -d sends form encoding), only mentioned when the body is
// not JSON at all.
func decodeJSON(c *gin.Context, v any) error {
	body, err := requestBody(c)
	if err != nil {
		return err
	}
	err = decodeBytes(body, v)
	// Only JSON that does not parse may be a client sending something else
	// (curl -d, a form); a wrong field in good JSON is just that field.
	if ae, ok := err.(*tollgate.Error); ok && !isJSONType(c.GetHeader("Content-Type")) && !json.Valid(body) {
		ae.Message += " (send JSON with Content-Type: application/json)"
	}
	return err
}

// requestBody returns the body, read once (readBody).
func requestBody(c *gin.Context) ([]byte, error) {
	if ri := info(c); ri.bodyRead {
		return ri.body, nil
	}
	return readBody(c)
}

// readBody reads the whole (size-limited) body. A body must arrive within
// Config.BodyTimeout of the request's arrival (slowloris): bodyDeadline set
// that deadline. Once the whole body is in, the deadline is lifted (net/http
// would otherwise cancel a long stream's context when it passed). A body
// that failed to arrive keeps it, and the connection is closed after the
// answer: else net/http would try to discard the rest of the body, with no
// deadline, before writing the 408, and the client would never get it.
func readBody(c *gin.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		c.Header("Connection", "close")
		var (
			mbe *http.MaxBytesError
			ne  net.Error
		)
		switch {
		case errors.As(err, &mbe):
			return nil, err
		case errors.As(err, &ne) && ne.Timeout():
			return nil, tollgate.Errorf(tollgate.CodeBodyTimeout, "the request body did not arrive within %s", info(c).bodyTimeout)
		}
		return nil, badRequest("could not read the request body")
	}
	_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Time{})
	ri := info(c)
	ri.body, ri.bodyRead = body, true
	return body, nil
}

func isJSONType(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// decodeBytes is decodeJSON's parser, separate so it can be fuzzed.
func decodeBytes(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	// Anything but JSON whitespace after the object is an error. dec.More
	// would miss a stray '}' or ']' ("{...}}"), which it reads as the end
	// of an enclosing value.
	if rest := bytes.Trim(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return badRequest("request body must hold a single JSON object")
	}
	return nil
}

func describeJSONError(err error) error {
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &se):
		return badRequest("request body is not valid JSON (at byte %d)", se.Offset)
	case errors.As(err, &te) && te.Type == reflect.TypeFor[tollgate.Money]():
		return withParam(badRequest("field %q must be a non-negative amount with at most 6 decimal places, such as \"25.00\", not %s", te.Field, te.Value), te.Field)
	case errors.As(err, &te):
		if te.Field == "" {
			return badRequest("request body must be a JSON object, not %s", te.Value)
		}
		return withParam(badRequest("field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value), te.Field)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is truncated JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return withParam(badRequest("unknown field %s", field), strings.Trim(field, `"`))
	}
	var fe *fieldError
	if errors.As(err, &fe) {
		return withParam(badRequest("field %q %s", fe.field, fe.reason), fe.field)
	}
	return badRequest("request body is not valid JSON")
}

// withParam sets e's Param: the request field at fault.
func withParam(e *tollgate.Error, param string) *tollgate.Error {
	e.Param = param
	return e
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "int", "int64", "int32", "uint", "uint64", "float64", "float32":
		return "a number"
	}
	return "a different type"
}

// fieldError is returned by custom UnmarshalJSON methods.
type fieldError struct {
	field  string
	reason string
}

func (e *fieldError) Error() string { return e.field + " " + e.reason }

// stringOrList is a JSON string or an array of strings ("input"); it
// converts to gateway.Inputs.
type stringOrList struct {
	Items []string
	List  bool
}

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		s.List = true
		if err := json.Unmarshal(b, &s.Items); err != nil {
			return &fieldError{field: "input", reason: "must be a string or an array of strings"}
		}
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err != nil {
		return &fieldError{field: "input", reason: "must be a string or an array of strings"}
	}
	s.Items = []string{one}
	return nil
}
