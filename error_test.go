package tollgate

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCodesTable: every code has a 4xx or 5xx status (499 only for the
// client that went away), Codes is sorted by status then name with no
// duplicates, and every Code constant in error.go is in it.
func TestCodesTable(t *testing.T) {
	codes := Codes()
	if len(codes) == 0 {
		t.Fatal("Codes() is empty")
	}
	for _, c := range codes {
		s := c.Status()
		if s < 400 || s > 599 {
			t.Errorf("code %q has status %d, want 400..599", c, s)
		}
		if (s == StatusClientClosed) != (c == CodeClientClosed) {
			t.Errorf("code %q has status %d: 499 is client_closed_request's alone", c, s)
		}
	}
	sorted := slices.IsSortedFunc(codes, func(a, b Code) int {
		if d := a.Status() - b.Status(); d != 0 {
			return d
		}
		return strings.Compare(string(a), string(b))
	})
	if !sorted {
		t.Errorf("Codes() is not sorted by status, then name: %v", codes)
	}
	seen := map[Code]bool{}
	for _, c := range codes {
		if seen[c] {
			t.Errorf("Codes() lists %q twice", c)
		}
		seen[c] = true
	}
	if Code("no_such_code").Status() != 500 {
		t.Errorf("an unknown code's status is %d, want 500", Code("no_such_code").Status())
	}

	// Every constant of type Code declared in error.go has a status.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "error.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared int
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
			return true
		}
		for i, name := range vs.Names {
			lit, ok := vs.Values[i].(*ast.BasicLit)
			if !ok {
				continue
			}
			declared++
			c := Code(strings.Trim(lit.Value, `"`))
			if !seen[c] {
				t.Errorf("error.go:%d: %s = %q is not in Codes(): give it a status in the statuses table", fset.Position(name.Pos()).Line, name.Name, c)
			}
		}
		return true
	})
	if declared != len(codes) {
		t.Errorf("error.go declares %d Code constants, Codes() has %d", declared, len(codes))
	}
}

// coded is a domain error that knows its code, like inference's.
type coded struct {
	code  Code
	msg   string
	retry time.Duration
}

func (e coded) Error() string             { return e.msg }
func (e coded) ErrorCode() Code           { return e.code }
func (e coded) RetryAfter() time.Duration { return e.retry }
func (e coded) Unwrap() error             { return context.Canceled } // a Coded error's code wins over what it wraps

const generic = "internal error; quote the request id when reporting it"

// TestErrorDescribe: ErrorCode, ErrorMessage, RetryAfter and IsFinal, for
// each kind of error a handler may get.
func TestErrorDescribe(t *testing.T) {
	quota := &Error{Code: CodeQuotaExceeded, Message: "monthly quota used up", Final: true}
	rate := &Error{Code: CodeRateLimited, Message: "slow down", RetryAfter: 1500 * time.Millisecond}
	secret := errors.New("open /var/lib/tollgate/secret.db: permission denied (key tg_abc)")
	for _, tc := range []struct {
		name   string
		err    error
		code   Code
		status int
		msg    string
		retry  time.Duration
		final  bool
	}{
		{"*Error, final", quota, CodeQuotaExceeded, 402, "monthly quota used up", 0, true},
		{"*Error, retry", rate, CodeRateLimited, 429, "slow down", 1500 * time.Millisecond, false},
		{"wrapped *Error", fmt.Errorf("admit: %w", quota), CodeQuotaExceeded, 402, "monthly quota used up", 0, true},
		{"Errorf", Errorf(CodeKeyNotFound, "no key %q", "key_1"), CodeKeyNotFound, 404, `no key "key_1"`, 0, false},
		{"Coded", coded{code: CodeBackendUnreachable, msg: "Ollama at http://x is not reachable", retry: 5 * time.Second},
			CodeBackendUnreachable, 502, "Ollama at http://x is not reachable", 5 * time.Second, false},
		{"wrapped Coded", fmt.Errorf("call: %w", coded{code: CodeModelNotFound, msg: "model \"x\" is not in the catalog"}),
			CodeModelNotFound, 404, "model \"x\" is not in the catalog", 0, false},
		{"context.Canceled", context.Canceled, CodeClientClosed, 499, "the client closed the request", 0, false},
		{"wrapped context.Canceled", fmt.Errorf("read: %w", context.Canceled), CodeClientClosed, 499, "the client closed the request", 0, false},
		{"context.DeadlineExceeded", context.DeadlineExceeded, CodeTimeout, 504, "the request took too long", 0, false},
		{"wrapped context.DeadlineExceeded", fmt.Errorf("query: %w", context.DeadlineExceeded), CodeTimeout, 504, "the request took too long", 0, false},
		{"unknown", secret, CodeInternal, 500, generic, 0, false},
		{"nil", nil, CodeInternal, 500, generic, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorCode(tc.err); got != tc.code || got.Status() != tc.status {
				t.Errorf("ErrorCode = %q (%d), want %q (%d)", got, got.Status(), tc.code, tc.status)
			}
			if got := ErrorMessage(tc.err); got != tc.msg {
				t.Errorf("ErrorMessage = %q, want %q", got, tc.msg)
			}
			if got := RetryAfter(tc.err); got != tc.retry {
				t.Errorf("RetryAfter = %v, want %v", got, tc.retry)
			}
			if got := IsFinal(tc.err); got != tc.final {
				t.Errorf("IsFinal = %v, want %v", got, tc.final)
			}
		})
	}

	// An internal error's text stays in the log: nothing of it reaches the client.
	msg := ErrorMessage(secret)
	for _, leak := range []string{"secret", "/var/lib", "permission", "tg_"} {
		if strings.Contains(msg, leak) {
			t.Errorf("ErrorMessage of an unknown error %q leaks %q", msg, leak)
		}
	}
	if got := quota.Error(); got != quota.Message {
		t.Errorf("(*Error).Error() = %q, want the message %q", got, quota.Message)
	}
}
