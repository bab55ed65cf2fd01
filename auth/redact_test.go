package auth

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestRedact: a key, a cut-off key after tg_, and a key's body without its
// prefix (found by its checksum, wherever it sits in a run of letters and
// digits) are redacted; other text is returned as it is.
func TestRedact(t *testing.T) {
	key, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	body := key[len(SecretPrefix):]
	if !IsSecretBody(body) || IsSecretBody(key) || IsSecretBody(body[1:]+"0") {
		t.Fatalf("IsSecretBody: want true only for the 38 characters after tg_")
	}
	for _, tc := range []struct{ in, want string }{
		{"/generate", "/generate"},
		{"/" + key, "/tg_[redacted]"},
		{"/x/" + key[:20] + "/y", "/x/tg_[redacted]/y"},
		{"/tg_short", "/tg_short"},
		{"/" + body, "/[redacted]"},
		{"/v1/" + body + ".json", "/v1/[redacted].json"},
		{"trace-" + body, "trace-[redacted]"},
		{"/ab" + body + "cd/e", "/[redacted]/e"},
		{body + "/" + body, "[redacted]/[redacted]"},
		{"/" + strings.Repeat("a", maxRedactScan+1), "/[redacted]"},
		{"/" + strings.Repeat("a", maxRedactScan), "/" + strings.Repeat("a", maxRedactScan)},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if ContainsSecret(tc.in) != (tc.in != tc.want) {
			t.Errorf("ContainsSecret(%q) = %v", tc.in, !(tc.in != tc.want))
		}
	}

	// Random runs of letters and digits, as long as a search goes, are not
	// taken for keys (a CRC-32 match by chance is one in 2^32 per window).
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, maxRedactScan)
	for i := 0; i < 2000; i++ {
		for j := range b {
			b[j] = base62[r.IntN(len(base62))]
		}
		if s := string(b); Redact(s) != s {
			t.Fatalf("Redact(%q) = %q: a random run taken for a key", s, Redact(s))
		}
	}
	if n := testing.AllocsPerRun(100, func() { Redact("/admin/keys/key_0123456789abcdef/rotate") }); n != 0 {
		t.Errorf("Redact of a clean path allocates %v times", n)
	}
}
