//go:build race

package ollamatest

// raceEnabled is true when the tests run under the race detector, which
// makes allocation counts meaningless.
const raceEnabled = true
