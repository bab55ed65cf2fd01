package inference

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/version"
)

// Performance note (see BENCHMARKS.md): api.Client's Generate and Chat read
// Ollama's NDJSON stream with a bufio.Scanner whose 512 KiB buffer is
// allocated, and zeroed, on every call. Against a fast backend that was most
// of the gateway's CPU per request (the allocation, then the GC it drives).
// stream below is the same code as api.Client.stream (Ollama v0.10.1) with
// one difference: its scanner starts from a pooled 1 KiB buffer and grows
// only for a longer line, up to the same 512 KiB limit. Requests, headers,
// errors and the handling of every line are unchanged. One thing differs on
// purpose: a read error (a connection that broke, a line over the limit) is
// returned, where api.Client ends the stream silently, so that a broken
// stream is not taken for one that Ollama ended. Signing (WithAuth, or
// ollama.com) is done by the backend's transport (signer), for this path
// and api.Client's alike.

// maxLineSize is api.Client's limit on one NDJSON line.
const maxLineSize = 512 * 1000

var (
	userAgent = fmt.Sprintf("ollama/%s (%s %s) Go/%s", version.Version, runtime.GOARCH, runtime.GOOS, runtime.Version())
	linePool  = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}
)

// stream POSTs data as JSON to path and calls fn with each line of the
// NDJSON answer, as api.Client.stream does.
func (b *backend) stream(ctx context.Context, path string, data any, fn func([]byte) error) error {
	bts, err := json.Marshal(data)
	if err != nil {
		return err
	}
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base.JoinPath(path).String(), bytes.NewReader(bts))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Accept", "application/x-ndjson")
	request.Header.Set("User-Agent", userAgent)
	response, err := b.http.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()

	buf := linePool.Get().(*[]byte)
	defer linePool.Put(buf)
	scanner := bufio.NewScanner(response.Body)
	scanner.Buffer((*buf)[:0], maxLineSize)
	for scanner.Scan() {
		bts := scanner.Bytes()
		if response.StatusCode >= http.StatusBadRequest {
			var errorResponse struct {
				Error string `json:"error,omitempty"`
			}
			if err := json.Unmarshal(bts, &errorResponse); err != nil {
				return fmt.Errorf("unmarshal: %w", err)
			}
			return api.StatusError{StatusCode: response.StatusCode, Status: response.Status, ErrorMessage: errorResponse.Error}
		}
		// fn decodes the line once, with its "error" field (see lineError).
		if err := fn(bts); err != nil {
			return err
		}
	}
	if err := scanner.Err(); err != nil {
		return &streamBroken{err}
	}
	return nil
}

// streamBroken is a read error in the middle of Ollama's stream: the
// connection broke, which is not the same as a stream that ended.
type streamBroken struct{ err error }

func (e *streamBroken) Error() string { return "reading the stream: " + e.err.Error() }
func (e *streamBroken) Unwrap() error { return e.err }

// streamLine is one NDJSON line of Ollama's /api/generate or /api/chat
// answer, with only the fields Tollgate reads: decoding it skips the rest
// (the context array, timestamps, durations), which api.GenerateResponse
// and api.ChatResponse would allocate and parse for every token.
type streamLine struct {
	Response string `json:"response"` // /api/generate
	Message  struct {
		Content   string         `json:"content"`
		ToolCalls []api.ToolCall `json:"tool_calls"`
	} `json:"message"` // /api/chat
	Done            bool   `json:"done"`
	DoneReason      string `json:"done_reason"`
	PromptEvalCount int    `json:"prompt_eval_count"`
	EvalCount       int    `json:"eval_count"`
	Error           string `json:"error"`
}

// decodeLine decodes one line, once, and returns the errors api.Client
// would: "unmarshal: ..." for a line that is not JSON, the message of a
// line that carries an error.
func decodeLine(bts []byte, line *streamLine) error {
	*line = streamLine{}
	if err := json.Unmarshal(bts, line); err != nil {
		return fmt.Errorf("unmarshal: %w", err)
	}
	if line.Error != "" {
		return errors.New(line.Error)
	}
	return nil
}

// generate is api.Client.Generate over stream, each line decoded once
// into a streamLine.
func (b *backend) generate(ctx context.Context, req *api.GenerateRequest, fn func(*streamLine) error) error {
	var line streamLine
	return b.stream(ctx, "/api/generate", req, func(bts []byte) error {
		if err := decodeLine(bts, &line); err != nil {
			return err
		}
		return fn(&line)
	})
}

// chat is api.Client.Chat over stream, each line decoded once into a
// streamLine.
func (b *backend) chat(ctx context.Context, req *api.ChatRequest, fn func(*streamLine) error) error {
	var line streamLine
	return b.stream(ctx, "/api/chat", req, func(bts []byte) error {
		if err := decodeLine(bts, &line); err != nil {
			return err
		}
		return fn(&line)
	})
}
