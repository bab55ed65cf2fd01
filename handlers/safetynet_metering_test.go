package handlers_test

// Safety net for metering: an answer is released only once its usage row is
// committed. No byte of a /generate, /embed or /predict answer (not even the
// status line) leaves while the row is being written; an answer whose row
// cannot be written is withheld (503 metering_unavailable); a stream whose
// row cannot be written ends with an error event, not done; and a client
// that hangs up mid-stream is billed for the pieces it got.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/inference/ollamatest"
	"tollgate/metering"
)

// bigAnswerCatalog is fakeCatalog with room for many /predict inputs. Every
// answer in bigAnswerCases is larger than net/http's write buffers (about
// 6 KiB together), so an answer written before its usage row is committed
// reaches the client at once instead of waiting in a buffer for the handler
// to return, and the tests below can see it.
func bigAnswerCatalog(url string) string {
	return fmt.Sprintf(`
backends:
  - url: %s
    connect_timeout: 2s
    first_byte_timeout: 10s
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate, predict]
    limits: {max_num_predict: 64, max_inputs: 200}
    price: {input_per_1k: 0.0002, output_per_1k: 0.0006}
  embedder:
    ollama: nomic-embed-text
    endpoints: [embed]
    limits: {max_inputs: 3}
`, url)
}

var (
	bigText  = strings.Repeat("forty-two ", 2000) // 20 KB of generated text
	bigReply = ollamatest.Reply{Chunks: []string{bigText}, EmbeddingDim: 1024}
	bigLabel = strings.Repeat("x", 100) // the fake answers the first label
)

// answerCase is a request whose successful answer, and only that, contains
// answer.
type answerCase struct {
	name, path string
	body       any
	answer     string
}

func bigAnswerCases() []answerCase {
	inputs := make([]string, 100) // 100 labels of 100 bytes: 11 KB
	for i := range inputs {
		inputs[i] = fmt.Sprintf("input %d", i)
	}
	return []answerCase{
		{"generate", "/generate", `{"model":"chat","prompt":"hi"}`, bigText[:100]},
		{"embed", "/embed", `{"model":"embedder","input":["a","b"]}`, `"embeddings"`},
		{"predict", "/predict", map[string]any{"model": "chat", "labels": []string{bigLabel, "y"}, "input": inputs}, bigLabel},
	}
}

// gatedRecorder makes every Record wait, before the real recorder commits,
// until the test closes the channel it sends on entered. Closing stop lets
// every Record through.
func gatedRecorder(entered chan<- chan struct{}, stop <-chan struct{}) serverOpt {
	return withRecorder(func(real gateway.Recorder) gateway.Recorder {
		return recordFunc(func(ctx context.Context, ev metering.Event) error {
			release := make(chan struct{})
			select {
			case entered <- release:
				select {
				case <-release:
				case <-stop:
				case <-ctx.Done():
					return ctx.Err()
				}
			case <-stop:
			case <-ctx.Done():
				return ctx.Err()
			}
			return real.Record(ctx, ev)
		})
	})
}

// quietPeriod is how long a test watches for response bytes that must not
// come. An answer written too early is on the loopback connection before
// Record is even called, so the client sees it well within this.
const quietPeriod = 150 * time.Millisecond

func TestSafetyNetNoAnswerByteBeforeUsageCommitted(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithReply(bigReply))
	entered, stop := make(chan chan struct{}), make(chan struct{})
	ts := newTestServer(t, bigAnswerCatalog(fake.URL), gatedRecorder(entered, stop))
	t.Cleanup(func() { close(stop) }) // runs before the server closes: no Record stays held
	keyID, secret := ts.newKey(t, auth.Spec{})
	for _, tc := range bigAnswerCases() {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				resp *http.Response
				err  error
			}
			got := make(chan result, 1)
			go func() {
				resp, err := ts.send(t.Context(), "POST", tc.path, tc.body, "X-API-Key", secret)
				got <- result{resp, err}
			}()
			var release chan struct{}
			select {
			case release = <-entered:
			case r := <-got:
				select { // let this request's Record go, if it comes, so the next case starts clean
				case release := <-entered:
					close(release)
				case <-time.After(time.Second):
				}
				if r.err == nil {
					r.resp.Body.Close()
					t.Fatalf("the client got %s before its usage row was even being recorded", r.resp.Status)
				}
				t.Fatalf("request failed before its usage was recorded: %v", r.err)
			case <-time.After(10 * time.Second):
				t.Fatal("the usage recorder was never called")
			}
			select {
			case r := <-got:
				close(release)
				if r.err == nil {
					r.resp.Body.Close()
					t.Fatalf("the client got %s while its usage row was not yet committed", r.resp.Status)
				}
				t.Fatalf("request failed while its usage was being recorded: %v", r.err)
			case <-time.After(quietPeriod):
			}
			close(release)
			var r result
			select {
			case r = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("no response after the usage row was committed")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.resp.Body.Close()
			body := readAll(t, r.resp)
			if r.resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(tc.answer)) {
				t.Fatalf("after the commit: %s, %d bytes; want 200 with the answer", r.resp.Status, len(body))
			}
			if len(body) < 8<<10 {
				t.Errorf("answer of %d bytes: too small to get past net/http's buffers, so an early write would go unseen", len(body))
			}
		})
	}
	if rows := ts.usageRows(t, keyID); len(rows) != 3 {
		t.Errorf("%d usage rows, want 3", len(rows))
	}
}

// failingRecorder is a recorder whose commits all fail.
func failingRecorder() serverOpt {
	return withRecorder(func(gateway.Recorder) gateway.Recorder {
		return recordFunc(func(context.Context, metering.Event) error {
			return errors.New("disk I/O error")
		})
	})
}

func TestSafetyNetUnrecordedAnswerWithheld(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithReply(bigReply))
	ts := newTestServer(t, bigAnswerCatalog(fake.URL), failingRecorder())
	for _, tc := range bigAnswerCases() {
		t.Run(tc.name, func(t *testing.T) {
			resp := ts.do(t, "POST", tc.path, tc.body)
			body := readAll(t, resp)
			if bytes.Contains(body, []byte(tc.answer)) {
				t.Errorf("the answer was given away although its usage could not be recorded")
			}
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status %s, want 503; body starts %.200q", resp.Status, body)
			}
			checkEnvelope(t, body, "metering_unavailable")
		})
	}
	if fake.Stats().Requests == 0 {
		t.Error("Ollama was never called: the test did not reach metering")
	}
}

func TestSafetyNetUnrecordedStreamEndsInError(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"), failingRecorder())
	resp := ts.do(t, "POST", "/generate", streamBody)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s, want 200 (the stream starts before metering)", resp.Status)
	}
	gs := parseGenerateStream(t, readEvents(t, resp.Body))
	if gs.done != nil {
		t.Errorf("the stream ended with done although its usage was not recorded: %v", gs.done)
	}
	if gs.errEv == nil {
		t.Fatalf("no error event at the end of the stream; events: %v", gs.events)
	}
	checkEnvelope(t, gs.errEv, "metering_unavailable")
}

func TestSafetyNetClientGoneMidStreamBilledForPieces(t *testing.T) {
	// The first piece comes at once, the next one after an hour.
	fake, ts := newFakeServer(t, "10s", ollamatest.WithFault(ollamatest.SlowChunks(time.Hour)))
	keyID, secret := ts.newKey(t, auth.Spec{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp, err := ts.send(ctx, "POST", "/generate", streamBody, "X-API-Key", secret)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	const received = 1
	var got []sseEvent
	r := bufio.NewReader(resp.Body)
	for len(got) < received {
		ev, err := readEvent(r)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, ev)
	}
	if got[0].Data != `{"text":"Hello"}` {
		t.Fatalf("events %v, want the first piece", got)
	}
	cancel()
	waitFake(t, fake, "the Ollama call canceled", func(s ollamatest.Stats) bool { return s.Canceled >= 1 && s.InFlight == 0 })
	var rows []metering.Event
	waitFor(t, "the usage row of the abandoned stream", func() bool {
		rows = ts.usageRows(t, keyID)
		return len(rows) > 0
	})
	if len(rows) != 1 {
		t.Fatalf("%d usage rows, want 1: %+v", len(rows), rows)
	}
	if ev := rows[0]; ev.Status != 499 || ev.CompletionTokens < received {
		t.Errorf("usage row: status %d, %d completion tokens; want 499 and at least the %d piece(s) delivered", ev.Status, ev.CompletionTokens, received)
	}
}
