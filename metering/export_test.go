package metering

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func exportEvents() []Event {
	a := testEvent("req-a")
	a.Cost = 342
	b := testEvent(`req-"b",x`)
	b.Endpoint, b.Model, b.PromptTokens, b.CompletionTokens = EndpointEmbed, "nomic-embed-text", 7, 0
	b.Status, b.Latency, b.Cost = 499, 12*time.Millisecond+345*time.Microsecond, 1_500_000
	b.Time = time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
	return []Event{a, b}
}

func TestWriteJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, exportEvents()); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, buf.String())
	}
	if len(got) != 2 {
		t.Fatalf("%d objects", len(got))
	}
	for _, obj := range got {
		if len(obj) != len(ExportColumns) {
			t.Errorf("object has %d fields, want %d: %v", len(obj), len(ExportColumns), obj)
		}
		for _, col := range ExportColumns {
			if _, ok := obj[col]; !ok {
				t.Errorf("field %s missing", col)
			}
		}
	}
	want := map[string]any{
		"request_id": "req-a", "key_id": "key1", "endpoint": "generate", "model": "llama3.2",
		"prompt_tokens": 10.0, "completion_tokens": 20.0, "total_tokens": 30.0,
		"cost": "0.000342", "cost_micros": 342.0, "status": 200.0, "latency_ms": 1.5,
		"created_at": "2025-03-14T15:09:26.535897932Z",
	}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[0][k], v)
		}
	}
	if got[1]["cost"] != "1.500000" || got[1]["latency_ms"] != 12.345 || got[1]["status"] != 499.0 {
		t.Errorf("second object: %v", got[1])
	}
	if !strings.Contains(buf.String(), `"latency_ms":12.345`) {
		t.Errorf("latency not written as an exact decimal: %s", buf.String())
	}
}

func TestWriteJSONEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "[]\n" {
		t.Fatalf("empty export = %q", buf.String())
	}
}

func TestWriteCSV(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCSV(&buf, exportEvents()); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || strings.Join(rows[0], ",") != strings.Join(ExportColumns, ",") {
		t.Fatalf("rows: %q", rows)
	}
	want := []string{"req-a", "key1", "generate", "llama3.2", "10", "20", "30", "0.000342", "342", "200", "1.500", "2025-03-14T15:09:26.535897932Z", "native"}
	if strings.Join(rows[1], "|") != strings.Join(want, "|") {
		t.Errorf("row 1 = %q\nwant    %q", rows[1], want)
	}
	if rows[2][0] != `req-"b",x` || rows[2][7] != "1.500000" || rows[2][10] != "12.345" {
		t.Errorf("row 2 = %q", rows[2])
	}
}

func TestWriteCSVEmptyHasHeader(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCSV(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if buf.String() != strings.Join(ExportColumns, ",")+"\n" {
		t.Fatalf("empty CSV = %q", buf.String())
	}
}

func TestNewEventWriter(t *testing.T) {
	for _, f := range []string{"csv", "json"} {
		if _, err := NewEventWriter(&bytes.Buffer{}, f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := NewEventWriter(&bytes.Buffer{}, "xml"); err == nil {
		t.Error("xml accepted")
	}
}

func TestQueryValidate(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, q := range []Query{{}, {GroupBy: "day"}, {GroupBy: "model"}, {GroupBy: "key", KeyID: "k"}, {From: t0}, {To: t0}, {From: t0, To: t0.Add(1)}} {
		if err := q.Validate(); err != nil {
			t.Errorf("%+v: %v", q, err)
		}
	}
	for _, q := range []Query{{GroupBy: "week"}, {From: t0, To: t0}, {From: t0, To: t0.Add(-1)}} {
		if err := q.Validate(); err == nil {
			t.Errorf("%+v accepted", q)
		}
	}
}
