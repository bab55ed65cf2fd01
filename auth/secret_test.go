package auth

import (
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestGenerateFormat(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		s, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != SecretLen || !strings.HasPrefix(s, "tg_") {
			t.Fatalf("Generate() = %q: want tg_ and %d chars", s, SecretLen)
		}
		if err := CheckFormat(s); err != nil {
			t.Fatalf("CheckFormat(Generate()) = %v", err)
		}
		if seen[s] {
			t.Fatal("Generate repeated a key")
		}
		seen[s] = true
	}
}

func TestCheckFormatRejects(t *testing.T) {
	good, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"empty":          "",
		"short":          good[:SecretLen-1],
		"long":           good + "0",
		"prefix":         "tx_" + good[3:],
		"upper prefix":   "TG_" + good[3:],
		"alphabet":       good[:10] + "-" + good[11:],
		"space":          good[:10] + " " + good[11:],
		"body typo":      flip(12),
		"checksum typo":  flip(SecretLen - 1),
		"swapped":        good[:5] + good[6:7] + good[5:6] + good[7:],
		"random":         "tg_" + strings.Repeat("A", SecretLen-3),
		"checksum range": good[:SecretLen-checksumLen] + "zzzzzz",
	}
	for name, s := range cases {
		if s == good {
			continue // e.g. swapping two equal characters
		}
		err := CheckFormat(s)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: CheckFormat = %v, want ErrMalformed", name, err)
			continue
		}
		if len(s) > 8 && strings.Contains(err.Error(), s[3:]) {
			t.Errorf("%s: error %q contains the key", name, err)
		}
	}
}

func TestCheckFormatDoesNotAllocate(t *testing.T) {
	good, _ := Generate()
	if n := testing.AllocsPerRun(100, func() { _ = CheckFormat(good) }); n != 0 {
		t.Fatalf("CheckFormat allocates %v times", n)
	}
}

func TestChecksumIsCRC32(t *testing.T) {
	for _, s := range []string{"", "a", "tg_0123456789abcdefghijABCDEFGHIJ0123", strings.Repeat("z", 100)} {
		if got, want := checksum(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("checksum(%q) = %08x, want %08x", s, got, want)
		}
	}
}

func TestHashAndDisplayPrefix(t *testing.T) {
	// SHA-256("abc"), a published test vector.
	if got := Hash("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("Hash(abc) = %s", got)
	}
	s, _ := Generate()
	if p := DisplayPrefix(s); p != s[:11] || len(p) != DisplayPrefixLen {
		t.Fatalf("DisplayPrefix = %q", p)
	}
	for _, s := range []string{"", "tg_short", "Bearer hunter2-password"} {
		if p := DisplayPrefix(s); p != "" {
			t.Errorf("DisplayPrefix(%q) = %q, want empty", s, p)
		}
	}
}

func TestNewID(t *testing.T) {
	id, err := newID()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 20 || !strings.HasPrefix(id, "key_") {
		t.Fatalf("newID() = %q", id)
	}
}

func FuzzCheckFormat(f *testing.F) {
	for i := 0; i < 4; i++ {
		s, _ := Generate()
		f.Add(s, uint8(i*7), uint8(i))
	}
	f.Add("", uint8(0), uint8(0))
	f.Add("tg_", uint8(1), uint8(2))
	f.Add("tg_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", uint8(40), uint8(255))
	f.Fuzz(func(t *testing.T, s string, pos, repl uint8) {
		err := CheckFormat(s) // must never panic, whatever s is
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("CheckFormat returned %v, not ErrMalformed", err)
		}
		// Every generated key passes, and every single-character change of
		// it fails: CRC-32 catches any error confined to one byte.
		good, gerr := Generate()
		if gerr != nil {
			t.Fatal(gerr)
		}
		if err := CheckFormat(good); err != nil {
			t.Fatalf("generated key rejected: %v", err)
		}
		b := []byte(good)
		i := int(pos) % len(b)
		if b[i] == repl {
			return
		}
		b[i] = repl
		if err := CheckFormat(string(b)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("mutation at %d to %q accepted", i, repl)
		}
	})
}
