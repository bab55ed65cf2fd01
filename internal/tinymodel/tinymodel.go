// Package tinymodel writes a tiny llama-architecture GGUF model that real
// Ollama can load and serve in tests.
//
// The model is 64 wide with 2 layers and a byte-level SentencePiece ("llama")
// vocabulary: <unk>, <s>, </s> and the 256 byte tokens <0x00>..<0xFF>. Its
// weights are seeded pseudo-random numbers, so its text is gibberish, but the
// file is byte-for-byte deterministic for a given [Config], loads in well
// under a second on a CPU, and exercises Ollama's real tokenizer, sampler,
// grammar (JSON format) and embedding paths.
//
// The weights are shaped so that the model behaves predictably enough for
// tests:
//
//   - It strongly prefers printable ASCII (mostly lowercase letters), so
//     replies are valid UTF-8 text.
//   - Its most likely next token depends only on the last token (the
//     transformer blocks shape the hidden state and embeddings, not the
//     ranking of next tokens). Greedy decoding (temperature 0) therefore
//     replies exactly [GreedyReply] ("WORKS") and then end-of-sequence, for
//     any prompt whose last byte is not one of the letters of GreedyReply
//     (for /api/chat without a template: the last message's last byte):
//     deterministic text, done_reason "stop", eval_count 6 (the
//     end-of-sequence token is counted); num_predict below 6 ends it with
//     done_reason "length".
//   - Under a JSON grammar greedy decoding stays short and valid too, e.g.
//     format "json" gives {"WORKS":"WORKS"}, a schema with an enum one of
//     its values.
//   - With Ollama's default sampling the reply is a few random letters that
//     usually run into "WORKS" and end (occasionally it is empty: the first
//     token sampled is end-of-sequence).
//
// The prompt is tokenized byte by byte after SentencePiece's space handling:
// a prompt of n bytes with s spaces takes 1 (BOS) + 3 (leading "▁") + n + 2s
// tokens.
//
// Embeddings (the final hidden state of the last token) are 64-dimensional
// and dominated by the last token: inputs that end in the same byte have a
// cosine similarity around 0.999, others much lower.
package tinymodel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/ollama/ollama/fs/ggml"
)

// GreedyReply is the reply the model produces under greedy decoding
// (temperature 0) for a prompt whose last byte is not one of its letters.
const GreedyReply = "WORKS"

// contextDims is the number of residual-stream dimensions reserved for the
// transformer blocks' output (see Build).
const contextDims = 16

// Vocabulary layout of the model.
const (
	UnkID = 0 // <unk>
	BOSID = 1 // <s>, added at the start of every prompt
	EOSID = 2 // </s>
	// ByteBase is the id of the byte token <0x00>; byte b has id ByteBase+b.
	ByteBase = 3
	// VocabSize is the number of tokens: 3 specials + 256 bytes.
	VocabSize = ByteBase + 256
)

// Config describes the model to write. The zero value is not useful; start
// from [DefaultConfig].
type Config struct {
	Seed          uint64 // seed of the pseudo-random weights
	EmbeddingDim  int    // model width (llama.embedding_length)
	Layers        int    // number of transformer blocks
	Heads         int    // attention heads
	KVHeads       int    // key/value heads (grouped-query attention when < Heads)
	FeedForward   int    // feed-forward width
	ContextLength int    // llama.context_length (training context)
}

// DefaultConfig returns the configuration used by the test harness:
// 64 wide, 2 layers, 4 heads, 256 feed-forward, 4096 context.
func DefaultConfig() Config {
	return Config{
		Seed:          20250801,
		EmbeddingDim:  64,
		Layers:        2,
		Heads:         4,
		KVHeads:       4,
		FeedForward:   256,
		ContextLength: 4096,
	}
}

func (c Config) validate() error {
	switch {
	case c.Layers < 1:
		return fmt.Errorf("tinymodel: Layers must be >= 1, got %d", c.Layers)
	case c.Heads < 1 || c.KVHeads < 1 || c.Heads%c.KVHeads != 0:
		return fmt.Errorf("tinymodel: Heads (%d) must be a positive multiple of KVHeads (%d)", c.Heads, c.KVHeads)
	case c.EmbeddingDim%c.Heads != 0 || (c.EmbeddingDim/c.Heads)%2 != 0:
		return fmt.Errorf("tinymodel: EmbeddingDim (%d) must split into an even head size over %d heads", c.EmbeddingDim, c.Heads)
	case c.EmbeddingDim < 48:
		return fmt.Errorf("tinymodel: EmbeddingDim must be at least 48, got %d", c.EmbeddingDim)
	case c.FeedForward < 1 || c.ContextLength < 16:
		return fmt.Errorf("tinymodel: FeedForward and ContextLength must be positive (ContextLength >= 16)")
	}
	return nil
}

// WriteFile writes the model described by cfg to path, replacing any
// existing file atomically (it writes a temporary file next to path and
// renames it).
func WriteFile(path string, cfg Config) error {
	kv, tensors, err := Build(cfg)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tinymodel-*.gguf")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := ggml.WriteGGUF(tmp, kv, tensors); err != nil {
		tmp.Close()
		return fmt.Errorf("tinymodel: write gguf: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Build returns the GGUF metadata and tensors of the model described by cfg,
// ready for [ggml.WriteGGUF]. The tensors' data can be written only once.
func Build(cfg Config) (ggml.KV, []*ggml.Tensor, error) {
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	d := cfg.EmbeddingDim
	headDim := d / cfg.Heads
	kvDim := headDim * cfg.KVHeads

	kv := ggml.KV{
		"general.architecture":                   "llama",
		"general.name":                           "tinymodel",
		"general.file_type":                      uint32(ggml.FileTypeF32),
		"general.quantization_version":           uint32(2),
		"llama.vocab_size":                       uint32(VocabSize),
		"llama.context_length":                   uint32(cfg.ContextLength),
		"llama.embedding_length":                 uint32(d),
		"llama.block_count":                      uint32(cfg.Layers),
		"llama.feed_forward_length":              uint32(cfg.FeedForward),
		"llama.attention.head_count":             uint32(cfg.Heads),
		"llama.attention.head_count_kv":          uint32(cfg.KVHeads),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"llama.rope.dimension_count":             uint32(headDim),
		"llama.rope.freq_base":                   float32(10000),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.tokens":                  tokens(),
		"tokenizer.ggml.scores":                  make([]float32, VocabSize),
		"tokenizer.ggml.token_type":              tokenTypes(),
		"tokenizer.ggml.unknown_token_id":        uint32(UnkID),
		"tokenizer.ggml.bos_token_id":            uint32(BOSID),
		"tokenizer.ggml.eos_token_id":            uint32(EOSID),
		"tokenizer.ggml.add_bos_token":           true,
		"tokenizer.ggml.add_eos_token":           false,
	}

	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	normal := func(n int, std float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(rng.NormFloat64() * std)
		}
		return out
	}
	ones := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = 1
		}
		return out
	}

	embd, output := headWeights(d, rng)
	ts := []*ggml.Tensor{
		f32Tensor("token_embd.weight", embd, d, VocabSize),
		f32Tensor("output_norm.weight", ones(d), d),
		f32Tensor("output.weight", output, d, VocabSize),
	}
	// The blocks are plain random, except that they write only into the last
	// contextDims dimensions of the residual stream, which the embedding
	// leaves at zero and the output head ignores. So the context shapes the
	// hidden state (and thus embeddings) but not which token is most likely:
	// greedy decoding depends only on the last token (see headWeights). It
	// does scale all logits a little through the final RMS norm.
	toContext := func(w []float32, in int) []float32 {
		clear(w[:(d-contextDims)*in]) // rows are output dimensions
		return w
	}
	for l := range cfg.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			f32Tensor(p+"attn_norm.weight", ones(d), d),
			f32Tensor(p+"attn_q.weight", normal(d*d, 0.2), d, d),
			f32Tensor(p+"attn_k.weight", normal(d*kvDim, 0.2), d, kvDim),
			f32Tensor(p+"attn_v.weight", normal(d*kvDim, 0.2), d, kvDim),
			f32Tensor(p+"attn_output.weight", toContext(normal(d*d, 0.005), d), d, d),
			f32Tensor(p+"ffn_norm.weight", ones(d), d),
			f32Tensor(p+"ffn_gate.weight", normal(d*cfg.FeedForward, 0.2), d, cfg.FeedForward),
			f32Tensor(p+"ffn_up.weight", normal(d*cfg.FeedForward, 0.2), d, cfg.FeedForward),
			f32Tensor(p+"ffn_down.weight", toContext(normal(cfg.FeedForward*d, 0.005), cfg.FeedForward), cfg.FeedForward, d),
		)
	}
	return kv, ts, nil
}

// A follow is a designed next-token preference: right after token From,
// token To gets logit Logit (before temperature).
type follow struct {
	From, To int
	Logit    float64
}

func byteTok(b byte) int { return ByteBase + int(b) }

// follows lists the designed next-token preferences.
//
// The chain W→O→R→K→S→</s> (logit 6 each) makes greedy decoding reply
// exactly GreedyReply. The rest keeps greedy decoding under a JSON grammar
// (format "json" or a JSON schema, where </s> is forbidden until the value
// is complete) short and valid: after the last letter a string closes ('"'
// 3); '{', '[' and ':' lead to a string, a quote to ':', '}' or ']', and a
// closing bracket to another one (0.75 each). 0.75 stays below the first
// letter's logit (about 1.25 right after a marked token), so free text is
// unaffected, but beats whitespace (0), which JSON grammars allow without
// limit, wherever the grammar forbids letters; once the JSON value is
// complete </s> (0.4) beats whitespace. Without these, greedy JSON output
// loops ("WORKSWORKS..." inside a string) until Ollama's 10×num_ctx token
// cap, which takes minutes.
func follows() []follow {
	var fs []follow
	for i := range len(GreedyReply) {
		next := EOSID
		if i+1 < len(GreedyReply) {
			next = byteTok(GreedyReply[i+1])
		}
		cur := byteTok(GreedyReply[i])
		fs = append(fs, follow{cur, next, 6}, follow{cur, cur, -3})
	}
	last := byteTok(GreedyReply[len(GreedyReply)-1])
	const weak = 0.75
	fs = append(fs,
		follow{last, byteTok('"'), 3},
		follow{byteTok('{'), byteTok('"'), weak},
		follow{byteTok('['), byteTok('"'), weak},
		follow{byteTok(':'), byteTok('"'), weak},
		follow{byteTok('"'), byteTok('}'), weak},
		follow{byteTok('"'), byteTok(':'), weak},
		follow{byteTok('"'), byteTok(']'), weak},
		follow{byteTok('}'), byteTok('}'), weak},
		follow{byteTok('}'), byteTok(']'), weak},
		follow{byteTok(']'), byteTok(']'), weak},
		follow{byteTok(']'), byteTok('}'), weak},
	)
	return fs
}

// baseLogit is the designed logit of token t after an ordinary token, and
// the standard deviation of the per-context noise added to it.
func baseLogit(t int) (logit, noise float64) {
	switch {
	case t == EOSID:
		return 0.4, 0
	case t < ByteBase: // <unk>, <s>
		return -30, 0
	}
	switch b := byte(t - ByteBase); {
	case b == GreedyReply[0]:
		return 1.5, 0
	case b == ' ' || b == '"' || b == '}':
		return 0, 0
	case b == '{' || b == '[' || b == ']' || b == ':' || b == ',':
		return -1.5, 0
	case b >= 'a' && b <= 'z':
		return 0, 0.3
	case b >= 0x21 && b <= 0x7e || b == '\n':
		return -1.5, 0.3
	default:
		return -12, 0
	}
}

// headWeights builds the token embedding and output (LM head) matrices,
// both VocabSize rows of d floats.
//
// Embedding row of token t: dimension 0 is 1 for every token (a constant
// "bias" feature), one "marker" dimension is 1 for each token that has
// designed follow-ups (see follows), the last contextDims dimensions are 0
// (they are the blocks' to write, and the output head ignores them), and the
// remaining dimensions are small noise. After the final RMS norm the hidden state carries a nearly constant
// bias feature plus the marker of the current token, and the output rows turn
// those into designed logits:
//
//   - from any token (baseLogit): lowercase letters ~0, space, '"' and '}' 0,
//     other printable ASCII -1.5, everything else far below, end-of-sequence
//     0.4 and the first letter of GreedyReply 1.5 (the greedy choice, but
//     only about 1 in 5 when sampled);
//   - right after a marked token, the logits of follows (the other logits
//     shrink by about a sixth there, because the marker takes part of the
//     normalized hidden state).
//
// Small per-token noise on the remaining dimensions makes sampled text vary.
func headWeights(d int, rng *rand.Rand) (embd, output []float32) {
	fs := follows()
	marker := map[int]int{} // token -> its marker dimension
	for _, f := range fs {
		if _, ok := marker[f.From]; !ok {
			marker[f.From] = 1 + len(marker)
		}
	}
	firstNoise, endNoise := 1+len(marker), d-contextDims
	const embNoise = 0.1
	embd = make([]float32, VocabSize*d)
	for t := range VocabSize {
		row := embd[t*d : (t+1)*d]
		row[0] = 1
		for i := firstNoise; i < endNoise; i++ {
			row[i] = float32(rng.NormFloat64() * embNoise)
		}
	}
	for t, dim := range marker {
		embd[t*d+dim] = 1
	}

	// Typical post-norm magnitude of the bias feature (h0) for an ordinary
	// token, and of the bias and marker features (hm) for a marked token.
	noiseSq := float64(endNoise-firstNoise) * embNoise * embNoise
	h0 := math.Sqrt(float64(d) / (1 + noiseSq))
	hm := math.Sqrt(float64(d) / (2 + noiseSq))
	hNoise := embNoise * h0

	output = make([]float32, VocabSize*d)
	for t := range VocabSize {
		row := output[t*d : (t+1)*d]
		base, noise := baseLogit(t)
		row[0] = float32(base / h0)
		if noise > 0 {
			// Sum over the noise dimensions of row[i]*h[i] has std `noise`.
			std := noise / (hNoise * math.Sqrt(float64(endNoise-firstNoise)))
			for i := firstNoise; i < endNoise; i++ {
				row[i] = float32(rng.NormFloat64() * std)
			}
		}
	}
	for _, f := range fs {
		// After the marked token the bias feature contributes base*hm/h0.
		base, _ := baseLogit(f.To)
		output[f.To*d+marker[f.From]] = float32((f.Logit - base*hm/h0) / hm)
	}
	return embd, output
}

func tokens() []string {
	ts := make([]string, VocabSize)
	ts[UnkID], ts[BOSID], ts[EOSID] = "<unk>", "<s>", "</s>"
	for b := range 256 {
		ts[ByteBase+b] = fmt.Sprintf("<0x%02X>", b)
	}
	return ts
}

// Token types as in llama.cpp's llama_token_type.
const (
	tokenTypeUnknown = 2
	tokenTypeControl = 3
	tokenTypeByte    = 6
)

func tokenTypes() []int32 {
	tt := make([]int32, VocabSize)
	tt[UnkID] = tokenTypeUnknown
	tt[BOSID], tt[EOSID] = tokenTypeControl, tokenTypeControl
	for b := range 256 {
		tt[ByteBase+b] = tokenTypeByte
	}
	return tt
}

// f32Tensor makes an F32 tensor; shape is in ggml order (ne0 = row length
// first), data is row-major.
func f32Tensor(name string, data []float32, shape ...int) *ggml.Tensor {
	n := 1
	s := make([]uint64, len(shape))
	for i, v := range shape {
		n *= v
		s[i] = uint64(v)
	}
	if n != len(data) {
		panic(fmt.Sprintf("tinymodel: tensor %s: %d values for shape %v", name, len(data), shape))
	}
	buf := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return &ggml.Tensor{Name: name, Kind: uint32(ggml.TensorTypeF32), Shape: s, WriterTo: bytes.NewReader(buf)}
}
