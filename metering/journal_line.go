package metering

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"

	"tollgate"
)

// A journal line is one usage event: a version tag, the event's fields
// separated by tabs (strings Go-quoted, so they hold no raw tab or newline),
// and a CRC-32C of everything before it, then '\n':
//
//	u2	"req_1"	"key_1"	"generate"	"tiny"	"native"	"acct_1"	12	34	200	1500000	420	1767225600000000000	1a2b3c4d
//
// The checksum makes a torn or garbled line (a failed write, a power cut)
// detectable, so it is skipped instead of being loaded wrong. Lines of
// version u1 (written before usage rows kept the account: no account field)
// are still read, with no account.
const lineVersion = "u2"

// strings is how many quoted fields a line of each version has.
var lineStrings = map[string]int{"u1": 5, "u2": 6}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendLine appends ev's journal line, newline included, to b.
func appendLine(b []byte, ev Event) []byte {
	start := len(b)
	b = append(b, lineVersion...)
	for _, s := range [...]string{ev.RequestID, ev.KeyID, string(ev.Endpoint), ev.Model, ev.Surface, ev.AccountID} {
		b = append(b, '\t')
		b = strconv.AppendQuote(b, s)
	}
	for _, n := range [...]int64{ev.PromptTokens, ev.CompletionTokens, int64(ev.Status), int64(ev.Latency), int64(ev.Cost), ev.Time.UnixNano()} {
		b = append(b, '\t')
		b = strconv.AppendInt(b, n, 10)
	}
	sum := crc32.Checksum(b[start:], castagnoli)
	b = append(b, '\t')
	b = appendHex32(b, sum)
	return append(b, '\n')
}

func appendHex32(b []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[(v>>uint(shift))&0xf])
	}
	return b
}

// errBadLine is wrapped by parseLine for every line it cannot trust.
var errBadLine = errors.New("metering: bad journal line")

// parseLine decodes one journal line (without its newline).
func parseLine(line []byte) (Event, error) {
	i := bytes.LastIndexByte(line, '\t')
	if i < 0 || len(line)-i-1 != 8 {
		return Event{}, fmt.Errorf("%w: no checksum", errBadLine)
	}
	want, err := strconv.ParseUint(string(line[i+1:]), 16, 32)
	if err != nil || crc32.Checksum(line[:i], castagnoli) != uint32(want) {
		return Event{}, fmt.Errorf("%w: checksum mismatch", errBadLine)
	}
	f := bytes.Split(line[:i], []byte{'\t'})
	ns, ok := lineStrings[string(f[0])]
	if !ok || len(f) != 1+ns+6 {
		return Event{}, fmt.Errorf("%w: %d fields", errBadLine, len(f))
	}
	var s [6]string
	for k := range ns {
		if s[k], err = strconv.Unquote(string(f[1+k])); err != nil {
			return Event{}, fmt.Errorf("%w: field %d: %v", errBadLine, 1+k, err)
		}
	}
	var n [6]int64
	for k := range n {
		if n[k], err = strconv.ParseInt(string(f[1+ns+k]), 10, 64); err != nil {
			return Event{}, fmt.Errorf("%w: field %d: %v", errBadLine, 1+ns+k, err)
		}
	}
	ev := Event{RequestID: s[0], KeyID: s[1], Endpoint: tollgate.Capability(s[2]), Model: s[3], Surface: s[4], AccountID: s[5],
		PromptTokens: n[0], CompletionTokens: n[1], Status: int(n[2]), Latency: time.Duration(n[3]),
		Cost: tollgate.Money(n[4]), Time: time.Unix(0, n[5]).UTC()}
	if err := ev.Validate(); err != nil {
		return Event{}, fmt.Errorf("%w: %v", errBadLine, err)
	}
	return ev, nil
}
