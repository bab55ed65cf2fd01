package handlers

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

// Bodies of the size the load benchmark sends: a webhook's small prompt,
// and one with the optional fields a server-to-server client sets.
var (
	benchSmallBody = []byte(`{"model":"chat","prompt":"Say hi in five words","stream":false}`)
	benchFullBody  = []byte(`{"model":"chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hi in five words"}],"stream":false,"options":{"temperature":0,"num_predict":32,"stop":["\n"]},"keep_alive":"5m"}`)
)

// BenchmarkDecodeGenerate measures the strict decoder on a /generate body
// (one JSON object, unknown fields refused, trailing data refused).
func BenchmarkDecodeGenerate(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{{"small", benchSmallBody}, {"full", benchFullBody}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				var req generateRequest
				if err := decodeBytes(bc.body, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchResponse = generateResponse{
	ID: "req_0123456789abcdef01234567", Model: "chat", Text: "Hello, world", DoneReason: "stop",
	Usage: usageJSON{PromptTokens: 5, CompletionTokens: 3, TotalTokens: 8},
}

// BenchmarkEncodeGenerate measures the /generate answer: encoding/json on
// its own, and through Gin's c.JSON into a response as the handler sends it.
func BenchmarkEncodeGenerate(b *testing.B) {
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(benchResponse); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gin", func(b *testing.B) {
		gin.SetMode(gin.ReleaseMode)
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		b.ReportAllocs()
		for b.Loop() {
			w.Body.Reset()
			clear(w.Header())
			c.JSON(http.StatusOK, benchResponse)
		}
	})
}
