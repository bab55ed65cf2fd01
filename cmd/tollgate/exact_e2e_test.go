package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the plain "sqlite3" driver, for holding the database's write lock

	"tollgate/auth/authtest"
	"tollgate/inference/ollamatest"
	"tollgate/internal/realollama"
)

// Black-box tests of the figures billing depends on, through `tollgate serve`
// with many clients at once: every figure is exact (counted, never timed).
//
// Token arithmetic used below. Admission reserves, per /generate, the prompt
// bound (prompt bytes + the model's prompt_overhead) plus the output cap
// (max_num_predict, or less near the end of an allowance), and settles to
// what Ollama counted. Where a test wants an exact total it makes the
// reservation equal the real count, so nothing is refunded and the sequence
// of admissions is the same in every interleaving:
//   - fake Ollama: prompt "h" (1 byte) + prompt_overhead 1 = 2, and the fake
//     reports prompt_eval_count 2; 10 chunks with max_num_predict 10 (the fake
//     stops after num_predict chunks and counts one token per chunk). 12
//     tokens a request.
//   - the real tiny model: prompt "hi" (2 bytes) + prompt_overhead 4 = 6, which
//     is Ollama's count for "hi" (BOS + the 3 bytes of "▁" + 2); the greedy reply
//     "WORKS" + end-of-sequence is 6 tokens = max_num_predict 6. 12 tokens.

// exactCatalog is the tiny catalog with admission limits and prices set.
func exactCatalog(url, ollamaModel string, overhead, maxPredict int) string {
	return tinyCatalog(url, ollamaModel) + fmt.Sprintf(
		"    limits: {prompt_overhead: %d, max_num_predict: %d}\n    price: {input_per_1k: 1, output_per_1k: 2}\n", overhead, maxPredict)
}

// tenTokens is a fake reply of exactly 10 one-token chunks, whatever the
// prompt, with prompt_eval_count 2.
func tenTokens() ollamatest.Option {
	return ollamatest.WithReply(ollamatest.Reply{Chunks: strings.Split("a b c d e f g h i j", " "), PromptEvalCount: 2})
}

// outcome is one answer, as a client saw it.
type outcome struct {
	status      int
	code        string // the error code, on errors
	id          string // the body's id on 200, the envelope's request_id on errors
	retryAfter  string
	shouldRetry string
	text        string
	doneReason  string
	usage       usageJSON
	err         error // transport or decoding trouble
}

// postOutcome posts body with key and reads the answer. It does not touch
// t, so clients may run it from their own goroutines.
func postOutcome(hc *http.Client, url, key, body string) outcome {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	resp, err := hc.Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return outcome{status: resp.StatusCode, err: err}
	}
	o := outcome{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), shouldRetry: resp.Header.Get("x-should-retry")}
	var v struct {
		ID         string    `json:"id"`
		Text       string    `json:"text"`
		DoneReason string    `json:"done_reason"`
		Usage      usageJSON `json:"usage"`
		Error      struct {
			Code      string `json:"code"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		o.err = fmt.Errorf("body %q: %v", b, err)
		return o
	}
	o.text, o.doneReason, o.usage, o.code = v.Text, v.DoneReason, v.Usage, v.Error.Code
	if o.id = v.ID; o.id == "" {
		o.id = v.Error.RequestID
	}
	return o
}

// maxPerClient stops a client that is never refused (a broken limit) from
// looping for ever.
const maxPerClient = 500

// retryable reports whether a well-behaved client retries o: a 402 that
// does not say x-should-retry: false (requests in flight hold part of the
// quota and may give it back; it carries Retry-After). The clients here
// retry at once rather than after Retry-After: the outcome is counted, not
// timed.
func retryable(o outcome) bool {
	return o.status == http.StatusPaymentRequired && o.shouldRetry != "false"
}

// hammer starts clients goroutines at once; each posts body until it gets a
// refusal that is not retryable (or maxPerClient answers). It returns every
// answer.
func hammer(t *testing.T, clients int, url, key, body string) []outcome {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var (
		mu  sync.Mutex
		all []outcome
		wg  sync.WaitGroup
	)
	start := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range maxPerClient {
				o := postOutcome(hc, url, key, body)
				mu.Lock()
				all = append(all, o)
				mu.Unlock()
				if o.status != http.StatusOK && !retryable(o) {
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	return all
}

// tally splits outcomes into answers (200), final refusals and retried
// ones, failing on transport errors and on a client that was never refused.
// A retried refusal must be a 402 quota_exceeded with Retry-After.
func tally(t *testing.T, outs []outcome, clients int) (ok, refused []outcome) {
	t.Helper()
	retried := 0
	for _, o := range outs {
		switch {
		case o.err != nil:
			t.Fatalf("a client got %d and %v", o.status, o.err)
		case o.status == http.StatusOK:
			ok = append(ok, o)
		case retryable(o):
			retried++
			if o.code != "quota_exceeded" || o.retryAfter == "" {
				t.Errorf("retryable refusal %d %s, Retry-After %q; want quota_exceeded with Retry-After", o.status, o.code, o.retryAfter)
			}
		default:
			refused = append(refused, o)
		}
	}
	t.Logf("%d clients: %d answers, %d final refusals, %d refusals retried (402 while requests in flight held the quota)",
		clients, len(ok), len(refused), retried)
	if len(refused) != clients {
		t.Fatalf("%d refusals for %d clients (each stops at its first): a client was never refused in %d requests", len(refused), clients, maxPerClient)
	}
	return ok, refused
}

// codes counts outcomes by "status code".
func codes(outs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		m[strconv.Itoa(o.status)+" "+o.code]++
	}
	return m
}

// usageReport is GET /usage.
type usageReport struct {
	Totals struct {
		Requests         int64 `json:"requests"`
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
		CostMicros       int64 `json:"cost_micros"`
	} `json:"totals"`
	Quota *struct {
		MonthlyTokens     int64  `json:"monthly_tokens"`
		RemainingTokens   *int64 `json:"remaining_tokens"`
		MonthlyRequests   int64  `json:"monthly_requests"`
		RemainingRequests *int64 `json:"remaining_requests"`
	} `json:"quota"`
}

func getUsage(t *testing.T, url, key string) usageReport {
	t.Helper()
	var u usageReport
	wantStatus(t, "GET /usage", send(t, nil, "GET", url+"/usage", "", withKey(key)), 200, &u)
	if u.Quota == nil {
		t.Fatalf("GET /usage has no quota")
	}
	return u
}

func deref(p *int64) string {
	if p == nil {
		return "none"
	}
	return strconv.FormatInt(*p, 10)
}

// summaryLine returns the fields of keyID's line in `tollgate usage summary`
// after the key's name (REQUESTS PROMPT COMPLETION TOTAL COST), or nil when
// it has none.
func summaryLine(t *testing.T, db, keyID string) []string {
	t.Helper()
	for _, line := range strings.Split(cli(t, "usage", "summary", "--db", db), "\n") {
		if f := strings.Fields(line); len(f) >= 7 && f[0] == keyID {
			return f[len(f)-5:]
		}
	}
	return nil
}

// billedTotals sums the rows of an export with status 200.
func billedTotals(rows map[string]usageRow) (n int, tokens, cost int64) {
	for _, r := range rows {
		if r.Status == 200 {
			n++
			tokens += r.TotalTokens
			cost += r.CostMicros
		}
	}
	return n, tokens, cost
}

// generateCalls counts the /api/generate requests the fake received, with
// the num_predict each carried.
func generateCalls(fake *ollamatest.Server) (n int, numPredict map[int]int) {
	numPredict = map[int]int{}
	for _, r := range fake.Requests() {
		if r.Path == "/api/generate" {
			n++
			np, _ := r.NumPredict()
			numPredict[np]++
		}
	}
	return n, numPredict
}

// 50 clients race for a 100-request monthly quota: exactly 100 answers, the
// rest 402 (final), exactly 100 billed records, and Ollama ran 100 times.
func TestExactMonthlyRequestQuota50Clients(t *testing.T) {
	r, fake := serveOnFake(t)
	keyID, key := createKeyWithID(t, r.db, "--name", "hundred", "--monthly-requests", "100")

	const clients = 50
	ok, refused := tally(t, hammer(t, clients, r.url+"/generate", key, `{"prompt":"hi"}`), clients)
	for _, o := range refused {
		if o.status != 402 || o.code != "quota_exceeded" || o.shouldRetry != "false" {
			t.Errorf("refusal %d %s (x-should-retry %q); want 402 quota_exceeded, x-should-retry: false", o.status, o.code, o.shouldRetry)
			break
		}
	}
	if len(ok) != 100 {
		t.Errorf("%d answered 200 under a 100-request quota (outcomes %v)", len(ok), codes(append(ok, refused...)))
	}

	rows := exportUsage(t, r.db, "--key", keyID)
	billed, _, _ := billedTotals(rows)
	if billed != 100 || len(rows) != 100 {
		t.Errorf("usage export: %d records, %d billed (status 200); want exactly 100 of each", len(rows), billed)
	}
	for _, o := range ok {
		if rows[o.id].Status != 200 {
			t.Errorf("answer %s has record %+v", o.id, rows[o.id])
		}
	}
	if n, _ := generateCalls(fake); n != 100 {
		t.Errorf("Ollama generated %d times; want 100 (a refused request reaches no model)", n)
	}
	if u := getUsage(t, r.url, key); deref(u.Quota.RemainingRequests) != "0" || u.Totals.Requests != 100 {
		t.Errorf("GET /usage: %d requests, remaining_requests %s; want 100 and 0", u.Totals.Requests, deref(u.Quota.RemainingRequests))
	}
	if o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"hi"}`); o.status != 402 || o.code != "quota_exceeded" {
		t.Errorf("afterwards: %d %s; want 402 quota_exceeded", o.status, o.code)
	}
}

// checkExactTokenAllowance checks the answers ok and the records rows of
// requests of perRequest tokens each (reserved exactly) under a token
// allowance: allowance/perRequest full answers, then exactly one cut at what
// was left (done_reason "limit", limitCompletion output tokens), and the
// billed tokens adding up to the allowance exactly.
func checkExactTokenAllowance(t *testing.T, ok []outcome, rows map[string]usageRow, allowance, perRequest int64, limitCompletion int64) {
	t.Helper()
	full := allowance / perRequest
	var sum int64
	var limited []outcome
	for _, o := range ok {
		sum += o.usage.TotalTokens
		if o.usage.TotalTokens != o.usage.PromptTokens+o.usage.CompletionTokens {
			t.Errorf("answer %s: usage %+v does not add up", o.id, o.usage)
		}
		if o.doneReason == "limit" {
			limited = append(limited, o)
		}
		if row := rows[o.id]; row.Status != 200 || row.TotalTokens != o.usage.TotalTokens || row.PromptTokens != o.usage.PromptTokens {
			t.Errorf("answer %s (usage %+v) has record %+v", o.id, o.usage, row)
		}
	}
	billed, billedTokens, _ := billedTotals(rows)
	if billedTokens > allowance {
		t.Errorf("billed %d tokens in %d records under an allowance of %d", billedTokens, billed, allowance)
	}
	if int64(len(ok)) != full+1 || sum != allowance || billedTokens != allowance || billed != len(ok) {
		t.Errorf("%d answers with %d tokens, %d billed records with %d tokens; want %d answers, %d records, %d tokens (exact)",
			len(ok), sum, billed, billedTokens, full+1, full+1, allowance)
	}
	if len(limited) != 1 || limited[0].usage.CompletionTokens != limitCompletion {
		var reasons []string
		for _, o := range ok {
			reasons = append(reasons, fmt.Sprintf("%s/%d", o.doneReason, o.usage.CompletionTokens))
		}
		sort.Strings(reasons)
		t.Errorf("done_reason/completion tokens of the answers: %v; want exactly one \"limit\" with %d tokens", reasons, limitCompletion)
	}
}

func TestExactMonthlyTokenQuota50Clients(t *testing.T) {
	fake := newFake(t, tenTokens())
	r := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", exactCatalog(fake.URL, "tiny", 1, 10))))
	keyID, key := createKeyWithID(t, r.db, "--name", "tokens", "--monthly-tokens", "100")

	const clients = 50
	ok, refused := tally(t, hammer(t, clients, r.url+"/generate", key, `{"prompt":"h"}`), clients)
	for _, o := range refused {
		if o.status != 402 || o.code != "quota_exceeded" || o.shouldRetry != "false" {
			t.Errorf("refusal %d %s (x-should-retry %q); want 402 quota_exceeded, x-should-retry: false", o.status, o.code, o.shouldRetry)
			break
		}
	}
	checkExactTokenAllowance(t, ok, exportUsage(t, r.db, "--key", keyID), 100, 12, 2)
	if n, np := generateCalls(fake); n != 9 || np[10] != 8 || np[2] != 1 {
		t.Errorf("Ollama got %d generations with num_predict %v; want 8 with 10 and 1 with 2", n, np)
	}
	if u := getUsage(t, r.url, key); deref(u.Quota.RemainingTokens) != "0" || u.Totals.TotalTokens != 100 {
		t.Errorf("GET /usage: %d tokens, remaining_tokens %s; want 100 and 0", u.Totals.TotalTokens, deref(u.Quota.RemainingTokens))
	}
	if o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"h"}`); o.status != 402 || o.code != "quota_exceeded" {
		t.Errorf("afterwards: %d %s; want 402 quota_exceeded", o.status, o.code)
	}
}

// The same against the real Ollama: its own counts, 12 tokens a request for
// "hi" (6 prompt, "WORKS" + end 6), a 105-token quota: 8 full answers (96),
// then one cut to 3 output tokens at the 9 left ("WOR", done_reason
// "limit"), then 402.
func TestExactMonthlyTokenQuota50ClientsRealOllama(t *testing.T) {
	url, model := realollama.Require(t)
	if p, c := ollamaCounts(t, url, "/api/generate", `{"model":"`+model+`","prompt":"hi","stream":false,"options":{"temperature":0,"num_predict":6}}`); p != 6 || c != 6 {
		t.Fatalf("Ollama counts %d+%d tokens for \"hi\"; this test's arithmetic assumes the tiny model's 6+6", p, c)
	}
	r := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", exactCatalog(url, model, 4, 6))))
	keyID, key := createKeyWithID(t, r.db, "--name", "tokens", "--monthly-tokens", "105")

	const clients = 50
	ok, refused := tally(t, hammer(t, clients, r.url+"/generate", key, `{"prompt":"hi"}`), clients)
	for _, o := range refused {
		if o.status != 402 || o.code != "quota_exceeded" {
			t.Errorf("refusal %d %s; want 402 quota_exceeded", o.status, o.code)
			break
		}
	}
	checkExactTokenAllowance(t, ok, exportUsage(t, r.db, "--key", keyID), 105, 12, 3)
	for _, o := range ok {
		if want := map[string]string{"stop": "WORKS", "limit": "WOR"}[o.doneReason]; o.text != want {
			t.Errorf("answer %q with done_reason %q", o.text, o.doneReason)
		}
	}
	if o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"hi"}`); o.status != 402 || o.code != "quota_exceeded" {
		t.Errorf("afterwards: %d %s; want 402 quota_exceeded", o.status, o.code)
	}
}

// The token quota's bound with the catalog's defaults (prompt_overhead 64
// for /generate, 8 per input for /embed) and ordinary English text, against
// the real Ollama: the key has just enough quota left for the request's
// reservation (its bytes + the overhead, + one output token for a
// generation), so it is admitted, and what Ollama then counts must still fit
// the quota.
//
// The tiny model's vocabulary has no "▁" piece, so each space of a prompt
// becomes three byte tokens: it declares prompt_tokens_per_byte 3, as an
// operator would for such a tokenizer (README, Limits), and keeps the
// default prompt_overhead.
func TestExactTokenBoundRealCountsDefaultOverhead(t *testing.T) {
	url, model := realollama.Require(t)
	cat := tinyCatalog(url, model) + "    limits: {prompt_tokens_per_byte: 3}\n"
	r := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", cat)))
	cases := []struct {
		name, path, field, text string
		reserve                 int // the gateway's bound beyond the text's bytes
	}{
		{"generate a paragraph", "/generate", "prompt", "Please read the following customer review and tell me in one short sentence whether the customer is happy, " +
			"and why: the parcel came two days late and the box was dented, but the blender itself is quiet and works well.", 64 + 1},
		{"embed a sentence", "/embed", "input", "the parcel came two days late", 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			quota := int64(3*len(c.text) + c.reserve)
			keyID, key := createKeyWithID(t, r.db, "--name", c.name, "--monthly-tokens", strconv.FormatInt(quota, 10))
			body, _ := json.Marshal(map[string]string{c.field: c.text})
			var answered []outcome
			for range 10 {
				o := postOutcome(http.DefaultClient, r.url+c.path, key, string(body))
				if o.err != nil {
					t.Fatal(o.err)
				}
				if o.status != 200 {
					if o.status != 402 || o.code != "quota_exceeded" {
						t.Fatalf("refused with %d %s; want 402 quota_exceeded", o.status, o.code)
					}
					break
				}
				answered = append(answered, o)
			}
			_, billed, _ := billedTotals(exportUsage(t, r.db, "--key", keyID))
			if len(answered) == 0 || billed > quota {
				var usages []usageJSON
				for _, o := range answered {
					usages = append(usages, o.usage)
				}
				t.Errorf("%d tokens billed under a monthly quota of %d (%s of %d bytes, %d spaces; answers %+v): "+
					"Ollama counted more prompt tokens than the reservation's bound",
					billed, quota, c.field, len(c.text), strings.Count(c.text, " "), usages)
			}
		})
	}
}

// 50 clients against 100 tokens per minute with the clock stopped (no
// refill): exactly 100 tokens billed, one answer cut ("limit"), 429
// tokens_per_minute_exceeded with Retry-After for everyone else; Retry-After
// is right: 2 s later a request fits.
func TestExactTokensPerMinute50Clients(t *testing.T) {
	fake := newFake(t, tenTokens())
	clock := authtest.NewClock(time.Now())
	r := startServeAt(t, clock.Now, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", exactCatalog(fake.URL, "tiny", 1, 10))))
	keyID, key := createKeyWithID(t, r.db, "--name", "tpm", "--tokens-per-minute", "100")

	const clients = 50
	ok, refused := tally(t, hammer(t, clients, r.url+"/generate", key, `{"prompt":"h"}`), clients)
	for _, o := range refused {
		// The bucket is empty and a request needs 3 (2 prompt + 1 output):
		// 3 tokens at 100 a minute is 1.8 s, rounded up.
		if o.status != 429 || o.code != "tokens_per_minute_exceeded" || o.retryAfter != "2" {
			t.Errorf("refusal %d %s, Retry-After %q; want 429 tokens_per_minute_exceeded, Retry-After 2", o.status, o.code, o.retryAfter)
			break
		}
	}
	checkExactTokenAllowance(t, ok, exportUsage(t, r.db, "--key", keyID), 100, 12, 2)

	clock.Advance(2 * time.Second) // 3.33 tokens back: room for 2 prompt + 1 output
	o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"h"}`)
	if o.status != 200 || o.doneReason != "limit" || o.usage.TotalTokens != 3 {
		t.Errorf("after Retry-After: %d %s, done_reason %q, usage %+v; want 200, \"limit\", 3 tokens", o.status, o.code, o.doneReason, o.usage)
	}
	if o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"h"}`); o.status != 429 {
		t.Errorf("then at once: %d %s; want 429", o.status, o.code)
	}
}

// An answer whose usage record cannot be committed within --record-timeout
// (another process holds SQLite's write lock) is withheld with 503
// metering_unavailable and not billed, also once the lock is released and
// the recorder catches up; the next request is answered and billed.
// Without the journal (--usage-journal off) each answer waits for its
// record's commit: a database locked past --record-timeout withholds the
// answer, and it is not billed.
func TestExactWithheldAnswerIsNotBilled(t *testing.T) {
	fake := newFake(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny")+"    price: {input_per_1k: 1, output_per_1k: 2}\n")
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--record-timeout", "500ms", "--usage-journal", "off")
	keyID, key := createKeyWithID(t, r.db, "--name", "held", "--monthly-requests", "10", "--monthly-tokens", "100000")

	first := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"hi"}`)
	if first.status != 200 {
		t.Fatalf("before the lock: %d %s", first.status, first.code)
	}
	before := getUsage(t, r.url, key)
	sumBefore := summaryLine(t, r.db, keyID)

	ctx := context.Background()
	db, err := sql.Open("sqlite3", "file:"+r.db+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	// Two requests: the first one's record is taken by the recorder's
	// writer (which then waits for the lock), the second's waits in its
	// queue behind it. Neither may be delivered or billed.
	var withheld []string
	for i := range 2 {
		x := send(t, nil, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(key))
		d := wantError(t, fmt.Sprintf("generate %d while the database is locked", i), x, 503, "metering_unavailable")
		if x.header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		withheld = append(withheld, d.RequestID)
	}
	// Readers are not blocked by the writer's lock (WAL).
	if during := getUsage(t, r.url, key); during.Totals != before.Totals {
		t.Errorf("GET /usage while locked: %+v; before %+v", during.Totals, before.Totals)
	}
	time.Sleep(time.Until(locked.Add(2 * time.Second)))
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// The recorder commits in order, so once this answer is out, whatever
	// it does with the withheld records is done.
	after := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"hi"}`)
	if after.status != 200 || after.usage.TotalTokens == 0 {
		t.Fatalf("after the lock is released: %d %s, usage %+v", after.status, after.code, after.usage)
	}
	rows := exportUsage(t, r.db, "--key", keyID)
	stored503 := 0
	for _, id := range withheld {
		row, ok := rows[id]
		switch {
		case !ok:
		case row.Status == 200 || row.TotalTokens > 0 || row.CostMicros > 0:
			t.Errorf("withheld answer %s is billed: %+v", id, row)
		default:
			stored503++
			if row.Status != 503 {
				t.Errorf("withheld answer %s recorded with status %d; want 503", id, row.Status)
			}
		}
	}
	for _, o := range []outcome{first, after} {
		if row := rows[o.id]; row.Status != 200 || row.TotalTokens != o.usage.TotalTokens || row.CostMicros == 0 {
			t.Errorf("answer %s (usage %+v) has record %+v", o.id, o.usage, row)
		}
	}
	t.Logf("withheld answers: %d of %d stored as status 503 with 0 tokens, the rest not stored", stored503, len(withheld))
	_, billedTokens, billedCost := billedTotals(rows)
	if want := first.usage.TotalTokens + after.usage.TotalTokens; billedTokens != want {
		t.Errorf("%d tokens billed; want %d (the two answers delivered)", billedTokens, want)
	}

	got := getUsage(t, r.url, key)
	wantTokens := before.Totals.TotalTokens + after.usage.TotalTokens
	if got.Totals.TotalTokens != wantTokens || got.Totals.CostMicros != billedCost ||
		got.Totals.Requests != before.Totals.Requests+1+int64(stored503) {
		t.Errorf("GET /usage totals %+v; before %+v; want only the answer after the release added (%d tokens, %d µ)",
			got.Totals, before.Totals, after.usage.TotalTokens, billedCost)
	}
	if *got.Quota.RemainingRequests != *before.Quota.RemainingRequests-1 || *got.Quota.RemainingTokens != *before.Quota.RemainingTokens-after.usage.TotalTokens {
		t.Errorf("quota left: %s requests, %s tokens; before %s, %s; want one request and %d tokens fewer",
			deref(got.Quota.RemainingRequests), deref(got.Quota.RemainingTokens),
			deref(before.Quota.RemainingRequests), deref(before.Quota.RemainingTokens), after.usage.TotalTokens)
	}
	sumAfter := summaryLine(t, r.db, keyID)
	if len(sumBefore) != 5 || len(sumAfter) != 5 {
		t.Fatalf("usage summary lines %q, %q", sumBefore, sumAfter)
	}
	if wantTotal := strconv.FormatInt(wantTokens, 10); sumAfter[3] != wantTotal {
		t.Errorf("usage summary: total tokens %s (before %s); want %s", sumAfter[3], sumBefore[3], wantTotal)
	}
	if wantCost := fmt.Sprintf("0.%06d", billedCost); sumAfter[4] != wantCost {
		t.Errorf("usage summary: cost %s (before %s); want %s", sumAfter[4], sumBefore[4], wantCost)
	}
}

// readmeGenerateBody is the body of README.md's first /generate example.
func readmeGenerateBody(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "/generate -H")
	if i < 0 {
		t.Fatal("README.md has no curl example of /generate")
	}
	j := strings.Index(s[i:], "-d '")
	if j < 0 {
		t.Fatal("README.md's first /generate example has no -d '...' body")
	}
	body := s[i+j+len("-d '"):]
	return body[:strings.IndexByte(body, '\'')]
}

// README's first /generate example, sent as it is, through the real Ollama.
func TestExactReadmeFirstExampleRealOllama(t *testing.T) {
	url, model := realollama.Require(t)
	body := readmeGenerateBody(t)
	var ex struct {
		Model   string         `json:"model"`
		Prompt  string         `json:"prompt"`
		Stream  bool           `json:"stream"`
		Options map[string]any `json:"options"`
	}
	if err := json.Unmarshal([]byte(body), &ex); err != nil || ex.Model == "" || ex.Prompt == "" || ex.Stream || ex.Options["temperature"] != 0.0 {
		t.Fatalf("README's first /generate body %s (%v): expected a non-streaming request with a model, a prompt and temperature 0", body, err)
	}
	// The catalog serves the example's public model name with the test model.
	cat := fmt.Sprintf("backends:\n  - url: %s\nmodels:\n  %q:\n    ollama: %s\n    endpoints: [generate]\n    price: {input_per_1k: 1, output_per_1k: 2}\n", url, ex.Model, model)
	r := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", cat)))
	keyID, key := createKeyWithID(t, r.db, "--name", "readme")

	x := send(t, nil, "POST", r.url+"/generate", body, withKey(key))
	var out struct {
		ID, Model, Text string
		DoneReason      string `json:"done_reason"`
		Usage           usageJSON
	}
	wantStatus(t, "README example "+body, x, 200, &out)
	if strings.TrimSpace(out.Text) == "" || !slices.Contains([]string{"stop", "length", "stopped_early"}, out.DoneReason) ||
		out.Model != ex.Model || out.ID != x.header.Get("X-Request-ID") {
		t.Errorf("README example answered %s", x.body)
	}
	// Ollama's own counts for the same request (num_predict is always set:
	// the model's cap, 2048 by default).
	p, c := ollamaCounts(t, url, "/api/generate", fmt.Sprintf(`{"model":%q,"prompt":%q,"stream":false,"options":{"temperature":0,"num_predict":2048}}`, model, ex.Prompt))
	if out.Usage != (usageJSON{p, c, p + c}) || p == 0 || c == 0 {
		t.Errorf("usage %+v; Ollama counts %d+%d", out.Usage, p, c)
	}
	rows := exportUsage(t, r.db, "--key", keyID)
	row := rows[out.ID]
	if len(rows) != 1 || row.Status != 200 || row.Endpoint != "generate" || row.Model != ex.Model ||
		row.PromptTokens != out.Usage.PromptTokens || row.CompletionTokens != out.Usage.CompletionTokens ||
		row.TotalTokens != out.Usage.TotalTokens || row.CostMicros != out.Usage.PromptTokens*1000+out.Usage.CompletionTokens*2000 {
		t.Errorf("answer %s with usage %+v has records %+v", out.ID, out.Usage, rows)
	}
}

// Ollama down: every inference route says 502 backend_unreachable and
// which URL; each request leaves a record with status 502, no tokens and no
// cost; none is charged to the request quota, so twice the quota of failed
// requests never turns into 402.
func TestExactOllamaDownIsNotCharged(t *testing.T) {
	down := ollamatest.RefusedURL(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(down, "tiny")+"    price: {input_per_1k: 1, output_per_1k: 2}\n")
	r := startServe(t, env("TOLLGATE_MODELS", cat))
	keyID, key := createKeyWithID(t, r.db, "--name", "down", "--monthly-requests", "3")

	calls := []struct{ path, body string }{
		{"/generate", `{"prompt":"hi"}`},
		{"/embed", `{"input":"hi"}`},
		{"/predict", `{"labels":["yes","no"],"input":"hi"}`},
	}
	endpoint := map[string]string{}
	for round := range 2 {
		for _, c := range calls {
			x := send(t, nil, "POST", r.url+c.path, c.body, withKey(key))
			d := wantError(t, fmt.Sprintf("%s (round %d) with Ollama down", c.path, round), x, 502, "backend_unreachable")
			if !strings.Contains(d.Message, down) {
				t.Errorf("%s: message %q does not name %s", c.path, d.Message, down)
			}
			endpoint[d.RequestID] = strings.TrimPrefix(c.path, "/")
		}
	}
	rows := exportUsage(t, r.db, "--key", keyID)
	if len(rows) != len(endpoint) {
		t.Errorf("%d usage records for %d failed requests", len(rows), len(endpoint))
	}
	for id, ep := range endpoint {
		row, ok := rows[id]
		if !ok || row.Status != 502 || row.Endpoint != ep || row.TotalTokens != 0 || row.CostMicros != 0 || row.Cost != "0.000000" {
			t.Errorf("%s request %s has record %+v (found %v); want status 502, 0 tokens, cost 0", ep, id, row, ok)
		}
	}
	u := getUsage(t, r.url, key)
	if deref(u.Quota.RemainingRequests) != "3" || u.Totals.TotalTokens != 0 || u.Totals.CostMicros != 0 {
		t.Errorf("GET /usage: remaining_requests %s, totals %+v; want 3 left and nothing billed", deref(u.Quota.RemainingRequests), u.Totals)
	}
}
