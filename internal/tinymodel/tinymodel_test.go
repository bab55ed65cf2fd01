package tinymodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

func TestWriteFileDecodes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tiny.gguf")
	cfg := DefaultConfig()
	if err := WriteFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ggml.Decode(f, -1)
	if err != nil {
		t.Fatal(err)
	}
	kv := g.KV()
	if kv.Architecture() != "llama" || kv.BlockCount() != uint64(cfg.Layers) || kv.EmbeddingLength() != uint64(cfg.EmbeddingDim) {
		t.Errorf("arch=%q blocks=%d width=%d", kv.Architecture(), kv.BlockCount(), kv.EmbeddingLength())
	}
	if got := kv.String("tokenizer.ggml.model"); got != "llama" {
		t.Errorf("tokenizer model %q", got)
	}
	if n := len(kv.Strings("tokenizer.ggml.tokens")); n != VocabSize {
		t.Errorf("%d tokens, want %d", n, VocabSize)
	}
	if got := kv.Uint("tokenizer.ggml.eos_token_id"); got != EOSID {
		t.Errorf("eos id %d", got)
	}
	if n, want := len(g.Tensors().Items()), 3+9*cfg.Layers; n != want {
		t.Errorf("%d tensors, want %d", n, want)
	}
	if kv.OllamaEngineRequired() {
		t.Error("model would need the new Ollama engine; it is meant for the llama.cpp runner")
	}
}

func TestWriteFileDeterministic(t *testing.T) {
	dir := t.TempDir()
	var sums [2][32]byte
	for i := range sums {
		path := filepath.Join(dir, "tiny.gguf")
		if err := WriteFile(path, DefaultConfig()); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha256.Sum256(b)
	}
	if sums[0] != sums[1] {
		t.Error("two writes of the same config differ")
	}
}

func TestBuildRejectsBadConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Heads = 3
	if _, _, err := Build(cfg); err == nil {
		t.Error("Build accepted 64 wide with 3 heads")
	}
}

// TestGreedyChain checks the designed next-token preferences on the model's
// "skeleton" (embedding -> final norm -> output, ignoring the small
// contributions of the transformer blocks): from an ordinary token the
// argmax is the first letter of GreedyReply, each of its letters leads to the
// next, and the last one to end-of-sequence.
func TestGreedyChain(t *testing.T) {
	_, ts, err := Build(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tensor := func(name string) []float32 {
		for _, x := range ts {
			if x.Name == name {
				var buf bytes.Buffer
				if _, err := x.WriteTo(&buf); err != nil {
					t.Fatal(err)
				}
				out := make([]float32, buf.Len()/4)
				for i := range out {
					out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf.Bytes()[4*i:]))
				}
				return out
			}
		}
		t.Fatalf("no tensor %s", name)
		return nil
	}
	d := DefaultConfig().EmbeddingDim
	embd, output := tensor("token_embd.weight"), tensor("output.weight")
	next := func(tok int) int {
		x := embd[tok*d : (tok+1)*d]
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		scale := 1 / math.Sqrt(ss/float64(d)+1e-5)
		best, bestLogit := -1, math.Inf(-1)
		for j := range VocabSize {
			var l float64
			for i, v := range x {
				l += float64(output[j*d+i]) * float64(v) * scale
			}
			if l > bestLogit {
				best, bestLogit = j, l
			}
		}
		return best
	}
	marked := map[int]bool{}
	for _, f := range follows() {
		marked[f.From] = true
	}
	w := ByteBase + int(GreedyReply[0])
	for b := 0x20; b < 0x7f; b++ {
		if marked[ByteBase+b] {
			continue
		}
		if got := next(ByteBase + b); got != w {
			t.Errorf("after %q: argmax token %d, want %q", rune(b), got, GreedyReply[0])
		}
	}
	for i := range len(GreedyReply) {
		want := EOSID
		if i+1 < len(GreedyReply) {
			want = ByteBase + int(GreedyReply[i+1])
		}
		if got := next(ByteBase + int(GreedyReply[i])); got != want {
			t.Errorf("after %q: argmax token %d, want %d", GreedyReply[i], got, want)
		}
	}
	// JSON punctuation: free text still continues with GreedyReply.
	for _, c := range []struct {
		after byte
		want  int
	}{{'{', w}, {'[', w}, {':', w}, {'"', w}, {'}', w}, {']', w}} {
		if got := next(ByteBase + int(c.after)); got != c.want {
			t.Errorf("after %q: argmax token %d, want %d", c.after, got, c.want)
		}
	}
}
