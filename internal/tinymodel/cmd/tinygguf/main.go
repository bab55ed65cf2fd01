// Command tinygguf writes the tiny test model of package tinymodel as a GGUF
// file that `ollama create NAME -f Modelfile` (with `FROM ./tiny.gguf`) accepts.
//
// Usage:
//
//	go run ./internal/tinymodel/cmd/tinygguf [-o tiny.gguf] [-seed N]
package main

import (
	"flag"
	"fmt"
	"os"

	"tollgate/internal/tinymodel"
)

func main() {
	cfg := tinymodel.DefaultConfig()
	out := flag.String("o", "tiny.gguf", "output file")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the random weights")
	flag.Parse()

	if err := tinymodel.WriteFile(*out, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "tinygguf:", err)
		os.Exit(1)
	}
}
