package handlers_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"tollgate"
)

// The error codes live in one table, tollgate.Codes with Code.Status. These
// tests keep the two documents that list them, README's "## Errors" table
// and /openapi.json, in step with it: a code added, removed, renamed or
// moved to another status in error.go fails here until both say the same.

const readmePath = "../README.md"

// readmeErrorRow is one code as README's error table lists it.
type readmeErrorRow struct {
	status int
	line   int // in README.md, 1-based
}

var backticked = regexp.MustCompile("`([^`]*)`")

// readmeErrorCodes parses the table under "## Errors": rows
// "| status | `code`, `code` | when |". Codes are the backticked words of
// the second cell; the third may hold other backticked text.
func readmeErrorCodes(t *testing.T) map[tollgate.Code][]readmeErrorRow {
	t.Helper()
	data, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatalf("reading %s: %v", readmePath, err)
	}
	lines := strings.Split(string(data), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "## Errors" })
	if start < 0 {
		t.Fatalf("%s has no \"## Errors\" section", readmePath)
	}
	out := map[tollgate.Code][]readmeErrorRow{}
	header := false
	for i := start + 1; i < len(lines) && !strings.HasPrefix(lines[i], "## "); i++ {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		switch {
		case len(cells) < 3:
			t.Fatalf("%s:%d: %q: want | status | codes | when |", readmePath, i+1, line)
		case !header:
			if cells[0] != "status" || cells[1] != "code" {
				t.Fatalf("%s:%d: the error table's header is %q, want | status | code | when |", readmePath, i+1, line)
			}
			header = true
			continue
		case strings.Trim(cells[0], "-: ") == "":
			continue // |---|---|---|
		}
		status, err := strconv.Atoi(cells[0])
		if err != nil {
			t.Errorf("%s:%d: status %q is not a number", readmePath, i+1, cells[0])
			continue
		}
		codes := backticked.FindAllStringSubmatch(cells[1], -1)
		if len(codes) == 0 {
			t.Errorf("%s:%d: the row for %d lists no `code`", readmePath, i+1, status)
		}
		for _, m := range codes {
			out[tollgate.Code(m[1])] = append(out[tollgate.Code(m[1])], readmeErrorRow{status, i + 1})
		}
	}
	if !header {
		t.Fatalf("%s: no | status | code | when | table under \"## Errors\"", readmePath)
	}
	return out
}

// TestReadmeErrorTableMatchesCodes: README lists every code exactly once, on
// the row of its status, and no other.
func TestReadmeErrorTableMatchesCodes(t *testing.T) {
	documented := readmeErrorCodes(t)
	for _, c := range tollgate.Codes() {
		rows := documented[c]
		switch {
		case len(rows) == 0:
			t.Errorf("%s \"## Errors\": code %q (status %d) is missing; add it to the %d row", readmePath, c, c.Status(), c.Status())
		case len(rows) > 1:
			t.Errorf("%s \"## Errors\": code %q is listed %d times (lines %v); list it once", readmePath, c, len(rows), rowLines(rows))
		}
		for _, r := range rows {
			if r.status != c.Status() {
				t.Errorf("%s:%d: code %q is on the %d row, but its status is %d (tollgate.Code.Status)", readmePath, r.line, c, r.status, c.Status())
			}
		}
	}
	for c, rows := range documented {
		if !slices.Contains(tollgate.Codes(), c) {
			t.Errorf("%s lines %v: %q is not an error code (not in tollgate.Codes); remove it or add it to error.go", readmePath, rowLines(rows), c)
		}
	}
}

func rowLines(rows []readmeErrorRow) []int {
	var out []int
	for _, r := range rows {
		out = append(out, r.line)
	}
	return out
}

// TestOpenAPIErrorCodeEnum: the error envelope's code is an enum of exactly
// tollgate.Codes, in that order (by status, then name).
func TestOpenAPIErrorCodeEnum(t *testing.T) {
	_, doc := fetchOpenAPI(t)
	envelope := deref(t, doc, map[string]any{"$ref": "#/components/schemas/Error"})
	detail := deref(t, doc, obj(envelope["properties"])["error"])
	code := deref(t, doc, obj(detail["properties"])["code"])
	const where = "handlers/openapi.json components.schemas.ErrorDetail.properties.code.enum"
	raw, ok := code["enum"].([]any)
	if !ok {
		t.Fatalf("%s: missing; want the codes of tollgate.Codes()", where)
	}
	var enum []tollgate.Code
	for i, v := range raw {
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s[%d] = %v, not a string", where, i, v)
		}
		enum = append(enum, tollgate.Code(s))
	}
	want := tollgate.Codes()
	for _, c := range want {
		if !slices.Contains(enum, c) {
			t.Errorf("%s: code %q (status %d) is missing", where, c, c.Status())
		}
	}
	seen := map[tollgate.Code]bool{}
	for _, c := range enum {
		if !slices.Contains(want, c) {
			t.Errorf("%s: %q is not an error code (not in tollgate.Codes)", where, c)
		}
		if seen[c] {
			t.Errorf("%s: %q is listed twice", where, c)
		}
		seen[c] = true
	}
	if !t.Failed() {
		for i := range want {
			if enum[i] != want[i] {
				t.Errorf("%s is out of order: [%d] is %q, want %q (tollgate.Codes: by status, then name)", where, i, enum[i], want[i])
				break
			}
		}
	}
	if desc, _ := code["description"].(string); !strings.Contains(desc, string(tollgate.CodeClientClosed)) {
		t.Errorf("%s: the description does not say that %q appears only in logs and usage records", where, tollgate.CodeClientClosed)
	}
}

// TestOpenAPIErrorResponsesMatchCodes: every documented error response has
// an example whose code has the response's status, and the codes its
// description names (in backticks) have that status too. Client-closed
// (499) is never a response.
func TestOpenAPIErrorResponsesMatchCodes(t *testing.T) {
	_, doc := fetchOpenAPI(t)
	for _, op := range operations(doc) {
		for status, r := range obj(op.op["responses"]) {
			if status == "" || status[0] < '4' || (op.path == "/readyz" && status == "503") {
				continue
			}
			if strings.HasPrefix(op.path, "/v1/") {
				continue // OpenAI's shape, with OpenAI's types and codes (openai_test.go)
			}
			where := op.method + " " + op.path + " " + status
			want, err := strconv.Atoi(status)
			if err != nil {
				t.Errorf("%s: status is not a number", where)
				continue
			}
			if want == tollgate.StatusClientClosed {
				t.Errorf("%s: 499 is never sent (logs and usage records only); do not document it as a response", where)
			}
			res := deref(t, doc, r)
			for _, m := range backticked.FindAllStringSubmatch(fmt.Sprint(res["description"]), -1) {
				c := tollgate.Code(m[1])
				switch {
				case !slices.Contains(tollgate.Codes(), c):
					t.Errorf("%s: the description names `%s`, which is not an error code", where, c)
				case c.Status() != want:
					t.Errorf("%s: the description names `%s`, whose status is %d", where, c, c.Status())
				}
			}
			media := obj(obj(res["content"])["application/json"])
			var examples []any
			if ex, ok := media["example"]; ok {
				examples = append(examples, ex)
			}
			for _, ex := range obj(media["examples"]) {
				examples = append(examples, deref(t, doc, ex)["value"])
			}
			if len(examples) == 0 {
				t.Errorf("%s: no example", where)
			}
			for _, ex := range examples {
				if strings.HasPrefix(op.path, "/api/") { // Ollama's shape: a message, no code
					if msg, ok := obj(ex)["error"].(string); !ok || msg == "" {
						t.Errorf("%s: the example %v is not {\"error\":\"message\"}", where, ex)
					}
					continue
				}
				c := tollgate.Code(fmt.Sprint(obj(obj(ex)["error"])["code"]))
				switch {
				case !slices.Contains(tollgate.Codes(), c):
					t.Errorf("%s: the example's code %q is not an error code", where, c)
				case c.Status() != want:
					t.Errorf("%s: the example's code %q has status %d", where, c, c.Status())
				}
			}
		}
	}
}
