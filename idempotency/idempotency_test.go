package idempotency

import (
	"errors"
	"strings"
	"testing"
)

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{
		"": false, "a": true, "8e03978e-40d5-43e8-bc93-6894a57f9324": true,
		strings.Repeat("x", MaxKeyLen): true, strings.Repeat("x", MaxKeyLen+1): false,
		"has space": false, "tab\t": false, "nl\n": false, "é": false, "\x7f": false,
	} {
		if ValidKey(k) != want {
			t.Errorf("ValidKey(%q) = %v, want %v", k, !want, want)
		}
	}
}

func TestSealOpensOnlyWithTheSameSecretAndKey(t *testing.T) {
	sealed, err := Seal("tg_secret", "k1", []byte("answer"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "answer") {
		t.Fatal("sealed body holds the plain text")
	}
	if got, err := Open("tg_secret", "k1", sealed); err != nil || string(got) != "answer" {
		t.Fatalf("Open: %q %v", got, err)
	}
	for _, tc := range [][2]string{{"tg_other", "k1"}, {"tg_secret", "k2"}} {
		if _, err := Open(tc[0], tc[1], sealed); !errors.Is(err, ErrOpen) {
			t.Errorf("Open(%q, %q): %v, want ErrOpen", tc[0], tc[1], err)
		}
	}
	if Fingerprint("POST", "/generate", []byte("a")) == Fingerprint("POST", "/embed", []byte("a")) {
		t.Error("the fingerprint ignores the path")
	}
}
