package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
	"tollgate/internal/realollama"
)

// Black-box tests of usage metering (issue 5): what clients see in their
// usage fields, what Ollama counted, the records in the database, /usage and
// the exports must agree to the token.

type usageJSON struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// streamDone is the final event of a /generate stream.
type streamDone struct {
	Done       bool      `json:"done"`
	ID         string    `json:"id"`
	DoneReason string    `json:"done_reason"`
	Usage      usageJSON `json:"usage"`
}

// readStream reads a /generate event stream: its text pieces and its final
// event. With stopAfter > 0 it returns once it has read that many pieces.
func readStream(r io.Reader, stopAfter int) (pieces []string, done streamDone, err error) {
	sc := bufio.NewScanner(r)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			if event != "" {
				return pieces, done, fmt.Errorf("%s event: %s", event, data)
			}
			var piece struct{ Text *string }
			if err := json.Unmarshal(data, &piece); err != nil {
				return pieces, done, fmt.Errorf("event %s: %v", data, err)
			}
			if piece.Text == nil {
				err := json.Unmarshal(data, &done)
				if err == nil && !done.Done {
					err = fmt.Errorf("event %s is neither a piece nor the end", data)
				}
				return pieces, done, err
			}
			pieces = append(pieces, *piece.Text)
			if len(pieces) == stopAfter {
				return pieces, done, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return pieces, done, err
	}
	return pieces, done, io.ErrUnexpectedEOF
}

// postStream posts a streaming /generate and reads it to its end.
func postStream(ctx context.Context, url, key, body string) (pieces []string, done streamDone, err error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/generate", strings.NewReader(body))
	if err != nil {
		return nil, done, err
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, done, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return nil, done, fmt.Errorf("stream = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return readStream(resp.Body, 0)
}

// ollamaCounts asks Ollama itself what it counts for a request.
func ollamaCounts(t *testing.T, url, path, body string) (prompt, completion int64) {
	t.Helper()
	var out struct {
		PromptEvalCount int64 `json:"prompt_eval_count"`
		EvalCount       int64 `json:"eval_count"`
	}
	wantStatus(t, "Ollama "+path, send(t, nil, "POST", url+path, body), 200, &out)
	return out.PromptEvalCount, out.EvalCount
}

func TestMeteringMatchesOllama(t *testing.T) {
	url, model := realollama.Require(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(url, model)+"    price: {input_per_1k: 1, output_per_1k: 2}\n")
	r := startServe(t, env("TOLLGATE_MODELS", cat))
	keyID, key := createKeyWithID(t, r.db, "--name", "billed")
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin")

	type seen struct {
		endpoint string
		usage    usageJSON
	}
	saw := map[string]seen{} // by request id: what the client was told
	post := func(path, body string) (exchange, usageJSON) {
		t.Helper()
		x := send(t, nil, "POST", r.url+path, body, withKey(key))
		var out struct {
			ID    string
			Text  string
			Label string
			Usage usageJSON
		}
		wantStatus(t, path, x, 200, &out)
		id := x.header.Get("X-Request-ID")
		if out.ID != "" && out.ID != id {
			t.Errorf("%s: body id %q, X-Request-ID %q", path, out.ID, id)
		}
		saw[id] = seen{strings.TrimPrefix(path, "/"), out.Usage}
		return x, out.Usage
	}

	// generate: "hi" is 6 prompt tokens and "WORKS" 6 completion tokens, as Ollama counts them.
	wantP, wantC := ollamaCounts(t, url, "/api/generate", `{"model":"`+model+`","prompt":"hi","stream":false,"options":{"temperature":0}}`)
	x, u := post("/generate", `{"prompt":"hi"}`)
	if !strings.Contains(string(x.body), `"text":"WORKS"`) || u != (usageJSON{wantP, wantC, wantP + wantC}) || wantP != 6 || wantC != 6 {
		t.Fatalf("generate = %s; Ollama counts %d+%d", x.body, wantP, wantC)
	}

	pieces, done, err := postStream(context.Background(), r.url, key, `{"prompt":"hi","stream":true}`)
	if err != nil || strings.Join(pieces, "") != "WORKS" || done.Usage != u || !strings.HasPrefix(done.ID, "req_") {
		t.Fatalf("stream: pieces %q, end %+v, %v", pieces, done, err)
	}
	saw[done.ID] = seen{"generate", done.Usage}

	// embed counts input tokens only.
	inputs := `["hi","hello there"]`
	wantP, _ = ollamaCounts(t, url, "/api/embed", `{"model":"`+model+`","input":`+inputs+`}`)
	if _, u := post("/embed", `{"input":`+inputs+`}`); u != (usageJSON{wantP, 0, wantP}) || wantP == 0 {
		t.Fatalf("embed usage %+v; Ollama counts %d", u, wantP)
	}

	x, u = post("/predict", `{"labels":["yes","no"],"input":"hi"}`)
	var pred struct{ Label string }
	_ = json.Unmarshal(x.body, &pred)
	if (pred.Label != "yes" && pred.Label != "no") || u.PromptTokens == 0 || u.CompletionTokens == 0 {
		t.Fatalf("predict = %s", x.body)
	}

	// One record per request, equal to what the client saw, priced from the catalog.
	rows := exportUsage(t, r.db)
	if len(rows) != len(saw) {
		t.Fatalf("%d usage records for %d requests: %+v", len(rows), len(saw), rows)
	}
	var sum usageJSON
	var cost int64
	for id, s := range saw {
		row, ok := rows[id]
		wantCost := s.usage.PromptTokens*1000 + s.usage.CompletionTokens*2000
		if !ok || row.KeyID != keyID || row.Endpoint != s.endpoint || row.Model != "tiny" || row.Status != 200 ||
			row.PromptTokens != s.usage.PromptTokens || row.CompletionTokens != s.usage.CompletionTokens ||
			row.TotalTokens != s.usage.TotalTokens || row.CostMicros != wantCost || row.Cost != fmt.Sprintf("0.%06d", wantCost) {
			t.Errorf("request %s (%s, usage %+v, cost %d µ) has record %+v", id, s.endpoint, s.usage, wantCost, row)
		}
		sum.PromptTokens += s.usage.PromptTokens
		sum.CompletionTokens += s.usage.CompletionTokens
		cost += wantCost
	}
	for id := range saw {
		if saw[id].endpoint == "generate" && rows[id].CostMicros != 18000 {
			t.Errorf("generate of 6+6 tokens at 1 and 2 per 1k costs %d µ, want 18000", rows[id].CostMicros)
		}
	}

	// /usage, the admin report and its export agree to the token.
	type totals struct {
		Requests, PromptTokens, CompletionTokens, TotalTokens, CostMicros int64
	}
	want := totals{int64(len(saw)), sum.PromptTokens, sum.CompletionTokens, sum.PromptTokens + sum.CompletionTokens, cost}
	for _, path := range []string{"/usage", "/usage?group_by=model", "/admin/usage?key_id=" + keyID} {
		k := key
		if strings.HasPrefix(path, "/admin") {
			k = admin
		}
		var report struct {
			Totals struct {
				Requests         int64
				PromptTokens     int64 `json:"prompt_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
				TotalTokens      int64 `json:"total_tokens"`
				CostMicros       int64 `json:"cost_micros"`
			}
			Groups []struct{ Group string }
		}
		wantStatus(t, path, send(t, nil, "GET", r.url+path, "", withKey(k)), 200, &report)
		if got := totals(report.Totals); got != want {
			t.Errorf("GET %s totals %+v, want %+v", path, got, want)
		}
		if grouped := strings.Contains(path, "group_by"); grouped != (len(report.Groups) == 1) || grouped && report.Groups[0].Group != "tiny" {
			t.Errorf("GET %s groups %+v", path, report.Groups)
		}
	}
	var exported []usageRow
	wantStatus(t, "admin export", send(t, nil, "GET", r.url+"/admin/usage/export?format=json", "", withKey(admin)), 200, &exported)
	for _, e := range exported {
		if e != rows[e.RequestID] {
			t.Errorf("admin export %+v, CLI export %+v", e, rows[e.RequestID])
		}
	}
	if len(exported) != len(rows) {
		t.Errorf("admin export has %d records, CLI %d", len(exported), len(rows))
	}
}

// A client that leaves mid-stream stops the generation and is billed for
// the pieces it got, with status 499.
func TestAbandonedStreamIsMeteredAs499(t *testing.T) {
	slow := ollamatest.SlowChunks(300 * time.Millisecond)
	r, fake := serveOnFake(t, ollamatest.WithReply(ollamatest.Reply{Chunks: strings.Split("a b c d e f g h", " ")}), ollamatest.WithFault(slow))
	keyID, key := createKeyWithID(t, r.db, "--name", "leaver")

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", r.url+"/generate", strings.NewReader(`{"prompt":"count","stream":true}`))
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	reqID := resp.Header.Get("X-Request-ID")
	pieces, _, err := readStream(resp.Body, 2)
	cancel()
	resp.Body.Close()
	if err != nil || len(pieces) != 2 {
		t.Fatalf("read %q before leaving: %v", pieces, err)
	}

	var rows map[string]usageRow
	eventually(t, 5*time.Second, "a record for the abandoned stream", func() bool {
		rows = exportUsage(t, r.db)
		return len(rows) > 0
	})
	row := rows[reqID]
	if len(rows) != 1 || row.Status != 499 || row.CompletionTokens != int64(len(pieces)) || row.PromptTokens != 0 || row.KeyID != keyID {
		t.Fatalf("records %+v; want one for %s with status 499 and %d completion tokens", rows, reqID, len(pieces))
	}
	eventually(t, 5*time.Second, "Ollama's generation cancelled", func() bool { return fake.Stats().Canceled == 1 })
}

// A client's X-Request-ID is echoed for tracing, but billing records carry
// Tollgate's own ids, so a reused id cannot merge or drop records.
func TestDuplicateClientRequestIDGivesTwoRecords(t *testing.T) {
	r, _ := serveOnFake(t)
	key := createKey(t, r.db, "--name", "retrier")
	var ids []string
	for range 2 {
		x := send(t, nil, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(key), withHeader("X-Request-ID", "retry-42"))
		var out struct{ ID string }
		wantStatus(t, "generate with X-Request-ID", x, 200, &out)
		if x.header.Get("X-Request-ID") != "retry-42" || !strings.HasPrefix(out.ID, "req_") {
			t.Fatalf("X-Request-ID %q, id %q; want the client's id echoed and Tollgate's own in the body", x.header.Get("X-Request-ID"), out.ID)
		}
		ids = append(ids, out.ID)
	}
	if ids[0] == ids[1] {
		t.Fatalf("two requests share id %s", ids[0])
	}
	rows := exportUsage(t, r.db)
	if len(rows) != 2 || rows[ids[0]].Status != 200 || rows[ids[1]].Status != 200 {
		t.Fatalf("records %+v; want one for each of %v", rows, ids)
	}

	// Errors too: the envelope has Tollgate's id, the header the client's.
	x := send(t, nil, "POST", r.url+"/generate", `{"prompt":1}`, withKey(key), withHeader("X-Request-ID", "retry-42"))
	if e := wantError(t, "bad body with X-Request-ID", x, 400, "invalid_request"); x.header.Get("X-Request-ID") != "retry-42" || slices.Contains(ids, e.RequestID) {
		t.Errorf("error: X-Request-ID %q, request_id %q", x.header.Get("X-Request-ID"), e.RequestID)
	}
	// An id that is not sane is replaced.
	x = send(t, nil, "GET", r.url+"/models", "", withKey(key), withHeader("X-Request-ID", "has spaces and \"quotes\""))
	if h := x.header.Get("X-Request-ID"); !strings.HasPrefix(h, "req_") {
		t.Errorf("insane X-Request-ID echoed as %q", h)
	}
}
