package ollamatest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"

	"tollgate/inference/ollamatest"
)

// stream runs a streaming generate and prints what the caller sees.
func stream(srv *ollamatest.Server, req *api.GenerateRequest) {
	var chunks []string
	sawDone := false
	err := srv.Client().Generate(context.Background(), req, func(r api.GenerateResponse) error {
		if r.Done {
			sawDone = true
		} else {
			chunks = append(chunks, r.Response)
		}
		return nil
	})
	fmt.Printf("chunks=%q done=%v err=%v\n", chunks, sawDone, err)
}

var hello = &api.GenerateRequest{Model: "tiny", Prompt: "hello"}

func ExampleNewServer() {
	srv := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	defer srv.Close()

	stream(srv, hello)
	stream(srv, &api.GenerateRequest{Model: "tiny", Prompt: "hello", Options: map[string]any{"num_predict": 2}})
	stream(srv, &api.GenerateRequest{Model: "llama3.2", Prompt: "hello"})
	// Output:
	// chunks=["Hello" "," " world"] done=true err=<nil>
	// chunks=["Hello" ","] done=true err=<nil>
	// chunks=[] done=false err=404 Not Found: model 'llama3.2' not found
}

func ExampleWithReply() {
	srv := ollamatest.NewServer(ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"4", "2"}, PromptEvalCount: 10}))
	defer srv.Close()

	stream(srv, hello)
	// Output:
	// chunks=["4" "2"] done=true err=<nil>
}

// A JSON schema with an enum gets a document that satisfies it, so a
// classifier can be tested against the fake.
func ExampleReply_schema() {
	srv := ollamatest.NewServer()
	defer srv.Close()

	var text string
	_ = srv.Client().Chat(context.Background(), &api.ChatRequest{
		Model:    "tiny",
		Messages: []api.Message{{Role: "user", Content: "I love it"}},
		Format:   []byte(`{"type":"object","properties":{"label":{"type":"string","enum":["positive","negative"]}},"required":["label"]}`),
		Stream:   new(bool),
	}, func(r api.ChatResponse) error { text = r.Message.Content; return nil })
	fmt.Println(text)
	// Output:
	// {"label":"positive"}
}

func ExampleCutAfter() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.CutAfter(1)))
	defer srv.Close()

	// The official client returns nil on a cut stream: only the missing
	// done chunk tells.
	stream(srv, hello)
	// Output:
	// chunks=["Hello"] done=false err=<nil>
}

func ExampleErrorAfter() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.ErrorAfter(2, "CUDA error: out of memory")))
	defer srv.Close()

	stream(srv, hello)
	// Output:
	// chunks=["Hello" ","] done=false err=CUDA error: out of memory
}

func ExampleMalformedAfter() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.MalformedAfter(1)))
	defer srv.Close()

	stream(srv, hello)
	// Output:
	// chunks=["Hello"] done=false err=unmarshal: unexpected end of JSON input
}

func ExampleBusy() {
	srv := ollamatest.NewServer()
	defer srv.Close()

	f := ollamatest.Busy()
	f.Times = 1 // only the next request
	srv.SetFault(f)
	stream(srv, hello)
	stream(srv, hello)
	// Output:
	// chunks=[] done=false err=503 Service Unavailable: server busy, please try again.  maximum pending requests exceeded
	// chunks=["Hello" "," " world"] done=true err=<nil>
}

func ExampleModelNotFound() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.ModelNotFound()))
	defer srv.Close()

	_, err := srv.Client().Embed(context.Background(), &api.EmbedRequest{Model: "nomic-embed-text", Input: "x"})
	var se api.StatusError
	fmt.Println(errors.As(err, &se), se.StatusCode, se.ErrorMessage)
	// Output:
	// true 404 model "nomic-embed-text" not found, try pulling it first
}

func ExampleStatusFault() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.StatusFault(http.StatusInternalServerError, `{"error":"llama runner process has terminated"}`)))
	defer srv.Close()

	stream(srv, hello)

	// A body that is not JSON, as from a proxy: the official client's
	// streaming calls decode it before looking at the status, so the status
	// is lost and the caller sees only a JSON error.
	srv.SetFault(ollamatest.StatusFault(http.StatusBadGateway, "<html>upstream down</html>"))
	stream(srv, hello)
	// Output:
	// chunks=[] done=false err=500 Internal Server Error: llama runner process has terminated
	// chunks=[] done=false err=unmarshal: invalid character '<' looking for beginning of value
}

func ExampleHangup() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.Hangup()))
	defer srv.Close()

	err := srv.Client().Generate(context.Background(), hello, func(api.GenerateResponse) error { return nil })
	fmt.Println(strings.HasSuffix(err.Error(), "EOF"))
	// Output:
	// true
}

func ExampleSlowFirstByte() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.SlowFirstByte(time.Hour)))
	defer srv.Close()

	// The gateway's upstream timeout fires; the fake sees the request go.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := srv.Client().Generate(ctx, hello, func(api.GenerateResponse) error { return nil })
	fmt.Println(errors.Is(err, context.DeadlineExceeded))

	_ = srv.Wait(context.Background(), func(s ollamatest.Stats) bool { return s.Canceled == 1 })
	fmt.Println(srv.Canceled())
	// Output:
	// true
	// 1
}

func ExampleSlowChunks() {
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.SlowChunks(10 * time.Millisecond)))
	defer srv.Close()

	start := time.Now()
	stream(srv, hello)
	fmt.Println(time.Since(start) >= 30*time.Millisecond) // 2 gaps + the pause before done
	// Output:
	// chunks=["Hello" "," " world"] done=true err=<nil>
	// true
}

// Hold pins requests in flight, to test a concurrency limit without timing.
func ExampleFault_hold() {
	hold := make(chan struct{})
	srv := ollamatest.NewServer(ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	defer srv.Close()

	done := make(chan struct{})
	for range 2 {
		go func() {
			_ = srv.Client().Generate(context.Background(), hello, func(api.GenerateResponse) error { return nil })
			done <- struct{}{}
		}()
	}
	_ = srv.Wait(context.Background(), func(s ollamatest.Stats) bool { return s.InFlight == 2 })
	fmt.Println("in flight:", srv.InFlight())
	close(hold)
	<-done
	<-done
	fmt.Println("max in flight:", srv.Stats().MaxInFlight)
	// Output:
	// in flight: 2
	// max in flight: 2
}

func ExampleServer_Requests() {
	srv := ollamatest.NewServer()
	defer srv.Close()

	stream(srv, &api.GenerateRequest{Model: "tiny", Prompt: "hi", Options: map[string]any{"num_predict": 256}})
	req, _ := srv.LastRequest()
	n, _ := req.NumPredict()
	fmt.Println(req.Path, req.Model, n, req.Streaming())
	// Output:
	// chunks=["Hello" "," " world"] done=true err=<nil>
	// /api/generate tiny 256 true
}
