package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// logAddr finds the addr of the first log line whose msg is msg.
func logAddr(log, msg string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == msg {
			return line.Addr, true
		}
	}
	return "", false
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pprof is served only with --debug-addr, only there, never on the API's
// address.
func TestDebugAddrServesPprofOnlyThere(t *testing.T) {
	fake := newFake(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--debug-addr", "127.0.0.1:0")
	addr, ok := logAddr(r.out.String(), "debug (pprof) listening")
	if !ok {
		t.Fatalf("no debug listening line:\n%s", r.out.String())
	}
	if status, body := get(t, "http://"+addr+"/debug/pprof/"); status != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("GET /debug/pprof/ on --debug-addr: %d %.200s", status, body)
	}
	if status, _ := get(t, "http://"+addr+"/debug/pprof/heap?debug=1"); status != 200 {
		t.Fatalf("heap profile: %d", status)
	}
	if status, _ := get(t, r.url+"/debug/pprof/"); status != 404 {
		t.Fatalf("GET /debug/pprof/ on the API's address: %d; want 404", status)
	}

	plain := startServe(t, env("TOLLGATE_MODELS", cat))
	if _, ok := logAddr(plain.out.String(), "debug (pprof) listening"); ok {
		t.Fatal("pprof served without --debug-addr")
	}
}
