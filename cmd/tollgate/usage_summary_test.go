package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"tollgate/metering"
	"tollgate/storage/sqlite"
)

func TestUsageSummaryByKeyShowsNames(t *testing.T) {
	db, id := newDBWithKey(t, "alice")
	s, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	at := clockStart.Add(time.Minute)
	_, err = s.InsertEvents(context.Background(), []metering.Event{
		{RequestID: "req_1", KeyID: id, Endpoint: "generate", Model: "tiny", PromptTokens: 3, CompletionTokens: 4, Status: 200, Time: at},
		{RequestID: "req_2", KeyID: "key_gone", Endpoint: "generate", Model: "tiny", PromptTokens: 1, CompletionTokens: 1, Status: 200, Time: at},
	}, nil)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, env(), "usage", "summary", "--db", db).stdout
	lines := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = f
		}
	}
	if h := lines["KEY"]; len(h) < 2 || h[1] != "NAME" {
		t.Errorf("header %q; want KEY NAME ...\n%s", h, out)
	}
	if l := lines[id]; len(l) != 7 || l[1] != "alice" || l[5] != "7" {
		t.Errorf("line for %s: %q; want its name alice and 7 tokens\n%s", id, l, out)
	}
	if l := lines["key_gone"]; len(l) != 7 || l[1] != "-" {
		t.Errorf("line for an unknown key: %q; want name -\n%s", l, out)
	}
	// Other groupings have no name column.
	if out := mustCLI(t, env(), "usage", "summary", "--db", db, "--by", "model").stdout; strings.Contains(out, "NAME") {
		t.Errorf("--by model:\n%s", out)
	}
}
