package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math"
)

const (
	// SecretPrefix starts every Tollgate key.
	SecretPrefix = "tg_"
	// SecretLen is the length of a key: prefix, random part, checksum.
	SecretLen = len(SecretPrefix) + randomLen + checksumLen
	// DisplayPrefixLen is how many leading characters of a key are safe to
	// store, show and log.
	DisplayPrefixLen = len(SecretPrefix) + 8

	randomLen   = 32 // 32 base62 chars ≈ 190 bits
	checksumLen = 6  // 62^6 > 2^32, so a CRC-32 fits
	idRandomLen = 16
	idPrefix    = "key_"
	base62      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// base62Val maps a byte to its base62 digit value, or -1.
var base62Val = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = int8(i)
	}
	return t
}()

// Reasons a key is malformed; each wraps ErrMalformed and names no secret.
var (
	errBadLength   = fmt.Errorf("%w: wrong length", ErrMalformed)
	errBadPrefix   = fmt.Errorf("%w: must start with %s", ErrMalformed, SecretPrefix)
	errBadAlphabet = fmt.Errorf("%w: unexpected character", ErrMalformed)
	errBadChecksum = fmt.Errorf("%w: checksum mismatch", ErrMalformed)
)

// Generate returns a new random key secret. It fails only if the system's
// random source fails. Safe for concurrent use.
func Generate() (string, error) {
	var b [SecretLen]byte
	copy(b[:], SecretPrefix)
	if err := randBase62(b[len(SecretPrefix) : len(SecretPrefix)+randomLen]); err != nil {
		return "", err
	}
	body := b[:len(SecretPrefix)+randomLen]
	putChecksum(b[len(body):], checksum(string(body)))
	return string(b[:]), nil
}

// newID returns a new key id: "key_" + 16 random base62 characters.
func newID() (string, error) { return newIDWith(idPrefix) }

// newIDWith returns prefix + 16 random base62 characters.
func newIDWith(prefix string) (string, error) {
	b := make([]byte, len(prefix)+idRandomLen)
	copy(b, prefix)
	if err := randBase62(b[len(prefix):]); err != nil {
		return "", err
	}
	return string(b), nil
}

// randBase62 fills dst with uniformly random base62 characters (rejection
// sampling, so no modulo bias).
func randBase62(dst []byte) error {
	var buf [64]byte
	n := 0
	for n < len(dst) {
		if _, err := rand.Read(buf[:]); err != nil {
			return fmt.Errorf("auth: random source: %w", err)
		}
		for _, c := range buf {
			if c >= 248 { // 248 = 4*62: keep the accepted range a multiple of 62
				continue
			}
			dst[n] = base62[c%62]
			n++
			if n == len(dst) {
				break
			}
		}
	}
	return nil
}

var crcTable = crc32.MakeTable(crc32.IEEE)

// checksum is crc32.ChecksumIEEE over a string, written out so that the
// input does not escape (the library's assembly path would make CheckFormat
// allocate).
func checksum(s string) uint32 {
	return ^crcUpdate(^uint32(0), s)
}

// crcUpdate continues an (inverted) CRC-32 over s.
func crcUpdate(crc uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		crc = crcTable[byte(crc)^s[i]] ^ crc>>8
	}
	return crc
}

// putChecksum writes sum as exactly checksumLen base62 digits, big-endian.
func putChecksum(dst []byte, sum uint32) {
	v := uint64(sum)
	for i := checksumLen - 1; i >= 0; i-- {
		dst[i] = base62[v%62]
		v /= 62
	}
}

// CheckFormat reports whether s is a well-formed Tollgate key: prefix,
// length, alphabet and checksum. It returns an error wrapping ErrMalformed
// (never containing s) or nil. It touches no store, does not allocate and is
// safe for concurrent use.
func CheckFormat(s string) error {
	if len(s) != SecretLen {
		return errBadLength
	}
	if s[:len(SecretPrefix)] != SecretPrefix {
		return errBadPrefix
	}
	return checkBody(s[len(SecretPrefix):])
}

// bodyLen is the length of a key after its prefix: random part and checksum.
const bodyLen = randomLen + checksumLen

// checkBody checks the bodyLen characters of a key after its prefix:
// alphabet, and the checksum of the whole key.
func checkBody(b string) error {
	for i := 0; i < len(b); i++ {
		if base62Val[b[i]] < 0 {
			return errBadAlphabet
		}
	}
	var sum uint64
	for i := randomLen; i < bodyLen; i++ {
		sum = sum*62 + uint64(base62Val[b[i]])
	}
	if sum > math.MaxUint32 || uint32(sum) != ^crcUpdate(crcUpdate(^uint32(0), SecretPrefix), b[:randomLen]) {
		return errBadChecksum
	}
	return nil
}

// IsSecretBody reports whether s is a key without its prefix: 38 base62
// characters ending in the checksum of "tg_" and the rest. A key pasted
// without its prefix is as much a secret as the whole key.
func IsSecretBody(s string) bool {
	return len(s) == bodyLen && checkBody(s) == nil
}

// Redacted stands for a secret that Redact removed.
const Redacted = "[redacted]"

// maxRedactScan is the longest run of letters and digits that Redact
// searches for a key's body; a longer run is redacted whole, unread, so the
// search costs at most a few dozen checksums per run.
const maxRedactScan = 128

// Redact returns s with every possible key replaced by Redacted: letters and
// digits after "tg_" (8 or more: a cut-off key is still a secret), and a run
// of letters and digits that holds a key's body without its prefix
// (IsSecretBody), or is too long to search. It returns s itself, without
// allocating, when there is nothing to redact. For URL paths, request ids
// and the like, before they are logged or echoed.
func Redact(s string) string {
	var out []byte
	last := 0 // s[:last] is in out
	for i := 0; i < len(s); {
		if base62Val[s[i]] < 0 {
			i++
			continue
		}
		j := i
		for j < len(s) && base62Val[s[j]] >= 0 {
			j++
		}
		if secretRun(s, i, j) {
			out = append(append(out, s[last:i]...), Redacted...)
			last = j
		}
		i = j
	}
	if out == nil {
		return s
	}
	return string(append(out, s[last:]...))
}

// ContainsSecret reports whether Redact would change s.
func ContainsSecret(s string) bool {
	return Redact(s) != s
}

// secretRun reports whether s[i:j], a maximal run of base62 characters, may
// be or hold a key.
func secretRun(s string, i, j int) bool {
	n := j - i
	switch {
	case i >= len(SecretPrefix) && s[i-len(SecretPrefix):i] == SecretPrefix && n >= 8:
		return true
	case n < bodyLen:
		return false
	case n > maxRedactScan:
		return true
	}
	for k := i; k+bodyLen <= j; k++ {
		if IsSecretBody(s[k : k+bodyLen]) {
			return true
		}
	}
	return false
}

// Hash returns the hex SHA-256 of secret: the only form in which a key is
// stored or looked up.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// DisplayPrefix returns the first DisplayPrefixLen characters of a key
// (e.g. "tg_AbCd1234"), which identify it to a human but cannot be used to
// authenticate. For a string that does not look like a key it returns "",
// so that an arbitrary credential is never echoed.
func DisplayPrefix(secret string) string {
	if len(secret) < DisplayPrefixLen || secret[:len(SecretPrefix)] != SecretPrefix {
		return ""
	}
	return secret[:DisplayPrefixLen]
}
