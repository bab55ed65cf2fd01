package handlers_test

import (
	"bufio"
	"context"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// A client that hangs up stops the GPU work: the call to Ollama is canceled.

func TestClientGoneMidStream(t *testing.T) {
	// The first chunk comes at once, the next one after an hour.
	fake, ts := newFakeServer(t, "10s", ollamatest.WithFault(ollamatest.SlowChunks(time.Hour)))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp, err := ts.send(ctx, "POST", "/generate", streamBody)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ev, err := readEvent(bufio.NewReader(resp.Body))
	if err != nil || ev.Data != `{"text":"Hello"}` {
		t.Fatalf("first event %+v, %v; want the first chunk", ev, err)
	}
	cancel()
	waitFake(t, fake, "the Ollama call canceled", func(s ollamatest.Stats) bool { return s.Canceled >= 1 && s.InFlight == 0 })
	ts.accessLog(t, resp.Header.Get("X-Request-ID"))
}

func TestClientGoneBeforeAnswer(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	fake, ts := newFakeServer(t, "10s", ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	for _, tc := range []struct{ name, path, body string }{
		{"generate", "/generate", generateBody},
		{"embed", "/embed", embedBody},
		{"predict", "/predict", predictBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake.Reset()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			sent := make(chan error, 1)
			go func() {
				resp, err := ts.send(ctx, "POST", tc.path, tc.body, "X-Request-ID", "gone-"+tc.name)
				if err == nil {
					resp.Body.Close()
				}
				sent <- err
			}()
			waitFake(t, fake, "the request held in Ollama", func(s ollamatest.Stats) bool { return s.InFlight == 1 })
			cancel()
			if err := <-sent; err == nil {
				t.Error("the request succeeded after it was canceled")
			}
			waitFake(t, fake, "the Ollama call canceled", func(s ollamatest.Stats) bool { return s.Canceled == 1 && s.InFlight == 0 })

			// The access log says the client went: 499.
			if line := ts.accessLogBy(t, "client_request_id", "gone-"+tc.name); line["status"] != float64(499) {
				t.Errorf("access log status %v, want 499", line["status"])
			}
		})
	}
}
