package ollamatest

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// BusyBody is the body of the 503 a real Ollama sends when its queue of
// pending requests is full (OLLAMA_MAX_QUEUE).
const BusyBody = `{"error":"server busy, please try again.  maximum pending requests exceeded"}`

// DefaultErrorMessage is the message of an ErrorLine fault that sets none.
const DefaultErrorMessage = "an error was encountered while running the model"

// StreamFault is something that goes wrong in the middle of a reply (see
// Fault.Stream). It is a plain value.
type StreamFault uint8

const (
	// NoStreamFault is the zero StreamFault: the reply completes.
	NoStreamFault StreamFault = iota

	// Cut closes the connection after Fault.After chunks, without the
	// final done chunk and without the chunked-encoding terminator, as a
	// crashed or killed Ollama would. The official client's scanner stops
	// at the cut and Generate/Chat return nil, having seen no done chunk.
	// A stream:false or embed reply is cut halfway through its body (the
	// client sees an unexpected EOF).
	Cut

	// ErrorLine sends {"error": Fault.ErrorMessage} as the line after
	// Fault.After chunks and ends the response normally, still with status
	// 200: what Ollama does when the runner fails mid-generation. The
	// official client returns errors.New(message). A stream:false or embed
	// request gets 500 {"error": message}, as from Ollama.
	ErrorLine

	// Malformed sends a line that is not valid JSON (a chunk line cut short)
	// after Fault.After chunks, then carries on with the rest of the reply.
	// The official client fails with "unmarshal: ...". A stream:false or
	// embed request gets a 200 whose body is cut-short JSON.
	Malformed

	// End ends the response normally (chunked-encoding terminator and all)
	// after Fault.After chunks, without the final done chunk: what Ollama
	// v0.10.1 does when a model repeats one token at temperature 0. The
	// official client returns nil, having seen no done chunk. A stream:false
	// reply is unaffected.
	End
)

// String returns the constant's name.
func (f StreamFault) String() string {
	switch f {
	case NoStreamFault:
		return "NoStreamFault"
	case Cut:
		return "Cut"
	case ErrorLine:
		return "ErrorLine"
	case Malformed:
		return "Malformed"
	case End:
		return "End"
	}
	return "StreamFault(" + strconv.Itoa(int(f)) + ")"
}

// Fault describes how a Server misbehaves. The zero Fault is no fault. Set
// one with WithFault or Server.SetFault; fields combine (a slow first byte,
// slow chunks and a cut, say), in this order:
//
//  1. Hold, then FirstByteDelay: nothing is sent meanwhile;
//  2. Hangup, or else Status: the whole answer;
//  3. otherwise the normal reply, with ChunkDelay before every chunk after
//     the first and before the done chunk, and Stream at chunk After.
//
// Every wait ends early when the client goes away (the request then counts
// in Stats.Canceled) or the server is closed (the connection is then cut).
//
// By default a Fault applies to /api/generate, /api/chat and /api/embed
// requests, whatever their model, until it is replaced; Paths, Model and
// Times narrow it down.
//
// A Fault is a plain value: the server keeps its own copy, so changing one
// after setting it has no effect (except through the shared Hold channel).
// The constructors below are pure functions; combine them by setting more
// fields on their result, e.g. f := CutAfter(2); f.ChunkDelay = 10*time.Millisecond.
type Fault struct {
	// Hold, when non-nil, makes each request wait until a value is received
	// from it or it is closed, before FirstByteDelay. Closing the channel
	// releases every held request: a test can pin requests in flight and
	// let them go when it chooses.
	Hold <-chan struct{}

	// FirstByteDelay is how long to wait before sending anything, headers
	// included, as a model being loaded does.
	FirstByteDelay time.Duration

	// Hangup closes the connection without sending a response at all (the
	// client's Do fails with EOF), as an Ollama that crashed on the request
	// would.
	Hangup bool

	// Status, when non-zero, is the status of the whole answer, sent with
	// Body as the body. Body "" gives the body Ollama sends with that status
	// on that endpoint where there is one: for 404 the model-not-found error
	// (`{"error":"model 'x' not found"}` from /api/generate and /api/show,
	// `{"error":"model \"x\" not found, try pulling it first"}` from
	// /api/chat and /api/embed), for 503 BusyBody, otherwise
	// {"error":"<status text, lower case>"}. The Content-Type is that of
	// Ollama's JSON errors when Body starts with '{', text/plain otherwise.
	Status int
	Body   string

	// ChunkDelay is the pause before each streamed chunk after the first,
	// and before the done chunk. For a stream:false request, the single
	// answer is sent after as many pauses as a stream would have had.
	ChunkDelay time.Duration

	// Stream is what goes wrong after After chunks of the reply have been
	// sent (After >= the number of chunks means just before the done
	// chunk). After 0 with Cut sends the 200 headers and nothing else.
	Stream StreamFault
	After  int

	// ErrorMessage is the message of an ErrorLine fault; "" means
	// DefaultErrorMessage.
	ErrorMessage string

	// Paths, when non-empty, lists the request paths the fault applies to
	// (e.g. "/api/chat", "/api/tags", "/"), in place of the default
	// /api/generate, /api/chat and /api/embed.
	Paths []string

	// Model, when non-empty, limits the fault to requests for that model
	// (compared as Ollama compares names: case-insensitively, with a
	// missing tag meaning ":latest").
	Model string

	// Times, when > 0, limits the fault to the next Times requests it
	// applies to; after them the server behaves normally until the fault
	// is set again. 0 means no limit.
	Times int
}

// SlowFirstByte returns a Fault that waits d before sending anything.
func SlowFirstByte(d time.Duration) Fault { return Fault{FirstByteDelay: d} }

// SlowChunks returns a Fault that pauses d between streamed chunks.
func SlowChunks(d time.Duration) Fault { return Fault{ChunkDelay: d} }

// CutAfter returns a Fault that closes the connection after n chunks.
func CutAfter(n int) Fault { return Fault{Stream: Cut, After: n} }

// EndAfter returns a Fault that ends the stream cleanly after n chunks,
// without its final done chunk.
func EndAfter(n int) Fault { return Fault{Stream: End, After: n} }

// ErrorAfter returns a Fault that sends {"error": msg} after n chunks
// (msg "" means DefaultErrorMessage).
func ErrorAfter(n int, msg string) Fault {
	return Fault{Stream: ErrorLine, After: n, ErrorMessage: msg}
}

// MalformedAfter returns a Fault that sends a line of broken JSON after n
// chunks.
func MalformedAfter(n int) Fault { return Fault{Stream: Malformed, After: n} }

// ModelNotFound returns a Fault that answers 404 with Ollama's
// model-not-found error for the requested model.
func ModelNotFound() Fault { return Fault{Status: 404} }

// Busy returns a Fault that answers 503 with BusyBody.
func Busy() Fault { return Fault{Status: 503, Body: BusyBody} }

// Hangup returns a Fault that closes the connection without a response.
func Hangup() Fault { return Fault{Hangup: true} }

// StatusFault returns a Fault that answers status with body (see
// Fault.Status for body "").
func StatusFault(status int, body string) Fault { return Fault{Status: status, Body: body} }

// faultState is a Fault as set on a server, with its remaining uses.
type faultState struct {
	Fault
	model     []byte // normalized Fault.Model
	remaining atomic.Int64
}

func newFaultState(f Fault) *faultState {
	if isZeroFault(&f) {
		return nil
	}
	st := &faultState{Fault: f}
	st.Paths = append([]string(nil), f.Paths...)
	if f.Model != "" {
		st.model = []byte(normalizeModel(f.Model))
	}
	if f.ErrorMessage == "" {
		st.ErrorMessage = DefaultErrorMessage
	}
	st.remaining.Store(int64(f.Times))
	return st
}

func isZeroFault(f *Fault) bool {
	return f.Hold == nil && f.FirstByteDelay == 0 && !f.Hangup && f.Status == 0 &&
		f.ChunkDelay == 0 && f.Stream == NoStreamFault
}

// applies reports whether the fault applies to a request for model on path,
// and uses up one of its Times if so.
func (f *faultState) applies(path string, inference bool, model []byte) bool {
	if len(f.Paths) == 0 {
		if !inference {
			return false
		}
	} else {
		found := false
		for _, p := range f.Paths {
			if p == path {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.model != nil && !modelMatches(model, f.model) {
		return false
	}
	if f.Times > 0 && f.remaining.Add(-1) < 0 {
		return false
	}
	return true
}

// normalizeModel returns name as the server stores it: with ":latest" when
// it has no tag.
func normalizeModel(name string) string {
	if !hasTag(name) {
		name += ":latest"
	}
	return name
}

func hasTag[S string | []byte](name S) bool {
	for i := len(name) - 1; i >= 0; i-- {
		switch name[i] {
		case ':':
			return true
		case '/':
			return false
		}
	}
	return false
}

// modelMatches reports whether the requested name req denotes the normalized
// name known, as Ollama resolves names: case-insensitively, a missing tag
// meaning ":latest".
func modelMatches(req, known []byte) bool {
	if hasTag(req) {
		return len(req) == len(known) && equalFoldASCII(req, known)
	}
	const latest = ":latest"
	return len(req)+len(latest) == len(known) &&
		equalFoldASCII(req, known[:len(req)]) &&
		strings.EqualFold(string(known[len(req):]), latest)
}

func equalFoldASCII(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
