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
func newID() (string, error) {
	b := make([]byte, len(idPrefix)+idRandomLen)
	copy(b, idPrefix)
	if err := randBase62(b[len(idPrefix):]); err != nil {
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
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crcTable[byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
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
	for i := len(SecretPrefix); i < len(s); i++ {
		if base62Val[s[i]] < 0 {
			return errBadAlphabet
		}
	}
	var sum uint64
	for i := SecretLen - checksumLen; i < SecretLen; i++ {
		sum = sum*62 + uint64(base62Val[s[i]])
	}
	if sum > math.MaxUint32 || uint32(sum) != checksum(s[:SecretLen-checksumLen]) {
		return errBadChecksum
	}
	return nil
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
