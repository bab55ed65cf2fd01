// Command streams holds many slow streaming requests open at once, for
// bench/compare.sh: it starts -n POSTs of -body to -url, spread evenly over
// -ramp, reads each answer to its end, and prints one JSON line with how
// many succeeded and the time to first token (from sending the request to
// the first line of the body that carries a piece: an SSE "data:" line or
// an NDJSON object), p50 and p99 in microseconds. With an https URL it
// speaks HTTP/2 (many streams per connection) and does not check the
// certificate: the benchmark's own self-signed one.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type result struct {
	ok   bool
	ttft time.Duration
	err  string
}

func main() {
	url := flag.String("url", "", "where to POST")
	key := flag.String("key", "", "X-API-Key header, if any")
	body := flag.String("body", "", "request body (JSON)")
	n := flag.Int("n", 10000, "concurrent streams")
	ramp := flag.Duration("ramp", 5*time.Second, "spread the starts over this long")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up on a stream after this long")
	flag.Parse()
	tr := &http.Transport{MaxIdleConnsPerHost: *n, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the benchmark's self-signed certificate
	hc := &http.Client{Transport: tr, Timeout: *timeout}
	results := make([]result, *n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * *ramp / time.Duration(*n))))
		wg.Go(func() { results[i] = one(hc, *url, *key, *body) })
	}
	wg.Wait()
	var ttfts []time.Duration
	failed, firstErr := 0, ""
	for _, r := range results {
		if !r.ok {
			failed++
			if firstErr == "" {
				firstErr = r.err
			}
			continue
		}
		ttfts = append(ttfts, r.ttft)
	}
	slices.Sort(ttfts)
	pct := func(p float64) float64 {
		if len(ttfts) == 0 {
			return 0
		}
		return float64(ttfts[int(p*float64(len(ttfts)-1))].Microseconds())
	}
	out, _ := json.Marshal(map[string]any{"n": *n, "ok": len(ttfts), "failed": failed, "first_error": firstErr,
		"ttft_p50_us": pct(0.5), "ttft_p99_us": pct(0.99), "took_s": time.Since(start).Seconds()})
	fmt.Println(string(out))
	if failed > 0 {
		os.Exit(1)
	}
}

// one sends a streaming request and reads it to the end.
func one(hc *http.Client, url, key, body string) result {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return result{err: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	sent := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return result{err: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return result{err: fmt.Sprintf("%d %s", resp.StatusCode, b)}
	}
	r := bufio.NewReader(resp.Body)
	var ttft time.Duration
	for {
		line, err := r.ReadBytes('\n')
		if ttft == 0 && (bytes.HasPrefix(line, []byte("data:")) || bytes.HasPrefix(line, []byte("{"))) {
			ttft = time.Since(sent)
		}
		if err == io.EOF {
			return result{ok: ttft > 0, ttft: ttft, err: "no piece"}
		}
		if err != nil {
			return result{err: err.Error()}
		}
	}
}
