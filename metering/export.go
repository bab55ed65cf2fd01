package metering

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"
)

// ExportColumns are the field names of an export, in order: the CSV header
// and the keys of each JSON object. cost is currency units as a decimal
// string with six places ("0.000342"), exact because it is derived from the
// integer cost_micros; created_at is RFC 3339 in UTC with nanoseconds;
// latency_ms has microsecond precision.
var ExportColumns = []string{
	"request_id", "key_id", "endpoint", "model",
	"prompt_tokens", "completion_tokens", "total_tokens",
	"cost", "cost_micros", "status", "latency_ms", "created_at", "surface",
}

// exportRecord is the JSON shape of one exported event; its fields follow
// ExportColumns.
type exportRecord struct {
	RequestID        string      `json:"request_id"`
	KeyID            string      `json:"key_id"`
	Endpoint         string      `json:"endpoint"`
	Model            string      `json:"model"`
	PromptTokens     int64       `json:"prompt_tokens"`
	CompletionTokens int64       `json:"completion_tokens"`
	TotalTokens      int64       `json:"total_tokens"`
	Cost             string      `json:"cost"`
	CostMicros       int64       `json:"cost_micros"`
	Status           int         `json:"status"`
	LatencyMS        json.Number `json:"latency_ms"`
	CreatedAt        string      `json:"created_at"`
	Surface          string      `json:"surface"`
}

func toRecord(e Event) exportRecord {
	return exportRecord{
		RequestID:        e.RequestID,
		KeyID:            e.KeyID,
		Endpoint:         string(e.Endpoint),
		Model:            e.Model,
		PromptTokens:     e.PromptTokens,
		CompletionTokens: e.CompletionTokens,
		TotalTokens:      e.TotalTokens(),
		Cost:             e.Cost.String(),
		CostMicros:       int64(e.Cost),
		Status:           e.Status,
		LatencyMS:        json.Number(latencyMS(e.Latency)),
		CreatedAt:        e.Time.UTC().Format(time.RFC3339Nano),
		Surface:          e.SurfaceName(),
	}
}

// latencyMS renders d in milliseconds with three decimals, exactly.
func latencyMS(d time.Duration) string {
	us := d.Microseconds()
	sign := ""
	if us < 0 {
		sign, us = "-", -us
	}
	return fmt.Sprintf("%s%d.%03d", sign, us/1000, us%1000)
}

// LogValue renders the event with the export's field names, so a JSON log
// line holds everything needed to re-enter a record that could not be
// committed.
func (e Event) LogValue() slog.Value {
	r := toRecord(e)
	return slog.GroupValue(
		slog.String("request_id", r.RequestID),
		slog.String("key_id", r.KeyID),
		slog.String("endpoint", r.Endpoint),
		slog.String("model", r.Model),
		slog.Int64("prompt_tokens", r.PromptTokens),
		slog.Int64("completion_tokens", r.CompletionTokens),
		slog.Int64("total_tokens", r.TotalTokens),
		slog.String("cost", r.Cost),
		slog.Int64("cost_micros", r.CostMicros),
		slog.Int("status", r.Status),
		slog.String("latency_ms", string(r.LatencyMS)),
		slog.String("created_at", r.CreatedAt),
		slog.String("surface", r.Surface),
	)
}

// EventWriter streams events into an export one at a time, so an export of
// millions of rows never holds them in memory. Close finishes the document
// (and must be called even when no event was written); it does not close the
// underlying writer.
type EventWriter interface {
	Write(Event) error
	Close() error
}

// NewEventWriter returns an EventWriter for format "csv" or "json".
func NewEventWriter(w io.Writer, format string) (EventWriter, error) {
	switch format {
	case "csv":
		return NewCSVWriter(w), nil
	case "json":
		return NewJSONWriter(w), nil
	}
	return nil, fmt.Errorf("metering: export format %q: want csv or json", format)
}

// CSVWriter writes events as CSV with a header row of ExportColumns.
type CSVWriter struct {
	w      *csv.Writer
	header bool
	row    []string
}

// NewCSVWriter returns a CSVWriter on w.
func NewCSVWriter(w io.Writer) *CSVWriter {
	return &CSVWriter{w: csv.NewWriter(w), row: make([]string, len(ExportColumns))}
}

func (c *CSVWriter) writeHeader() error {
	if c.header {
		return nil
	}
	c.header = true
	return c.w.Write(ExportColumns)
}

// Write writes one event as a CSV row (after the header, the first time).
func (c *CSVWriter) Write(e Event) error {
	if err := c.writeHeader(); err != nil {
		return err
	}
	r := toRecord(e)
	c.row = append(c.row[:0],
		r.RequestID, r.KeyID, r.Endpoint, r.Model,
		strconv.FormatInt(r.PromptTokens, 10), strconv.FormatInt(r.CompletionTokens, 10),
		strconv.FormatInt(r.TotalTokens, 10), r.Cost, strconv.FormatInt(r.CostMicros, 10),
		strconv.Itoa(r.Status), string(r.LatencyMS), r.CreatedAt, r.Surface)
	return c.w.Write(c.row)
}

// Close writes the header if no row was written and flushes.
func (c *CSVWriter) Close() error {
	if err := c.writeHeader(); err != nil {
		return err
	}
	c.w.Flush()
	return c.w.Error()
}

// JSONWriter writes events as one JSON array of objects, one object per line.
type JSONWriter struct {
	w *bufio.Writer
	n int
}

// NewJSONWriter returns a JSONWriter on w.
func NewJSONWriter(w io.Writer) *JSONWriter {
	return &JSONWriter{w: bufio.NewWriter(w)}
}

// Write writes one event as an element of the array.
func (j *JSONWriter) Write(e Event) error {
	b, err := json.Marshal(toRecord(e))
	if err != nil {
		return err
	}
	sep := ",\n"
	if j.n == 0 {
		sep = "[\n"
	}
	j.n++
	if _, err := j.w.WriteString(sep); err != nil {
		return err
	}
	_, err = j.w.Write(b)
	return err
}

// Close ends the array ("[]" when nothing was written) and flushes.
func (j *JSONWriter) Close() error {
	end := "\n]\n"
	if j.n == 0 {
		end = "[]\n"
	}
	if _, err := j.w.WriteString(end); err != nil {
		return err
	}
	return j.w.Flush()
}

// WriteCSV writes events as CSV with a header row.
func WriteCSV(w io.Writer, events []Event) error {
	return writeAll(NewCSVWriter(w), events)
}

// WriteJSON writes events as a JSON array of objects.
func WriteJSON(w io.Writer, events []Event) error {
	return writeAll(NewJSONWriter(w), events)
}

func writeAll(ew EventWriter, events []Event) error {
	for _, e := range events {
		if err := ew.Write(e); err != nil {
			return err
		}
	}
	return ew.Close()
}
