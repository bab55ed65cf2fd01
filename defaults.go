// Package tollgate holds what the binary carries with it: the default model
// catalog, so `tollgate serve` runs on a fresh machine without any file.
package tollgate

import _ "embed"

// DefaultModels is the repository's models.yaml, built into the binary.
//
//go:embed models.yaml
var DefaultModels []byte
