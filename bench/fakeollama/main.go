// Command fakeollama serves inference/ollamatest's fake Ollama as a process
// of its own, for the load benchmarks (bench/run.sh, bench/compare.sh): it
// answers at once (or, with -chunk-delay, streams slowly),
// keeps no record of requests, listens on a free 127.0.0.1 port and prints
// its base URL ("http://127.0.0.1:port") as the first line on stdout. It
// stops on SIGINT or SIGTERM, or after -lifetime at the latest, so a
// benchmark that dies cannot leave it running for long.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"tollgate/inference/ollamatest"
)

func main() {
	lifetime := flag.Duration("lifetime", 30*time.Minute, "exit after this long")
	chunkDelay := flag.Duration("chunk-delay", 0, "pause before each streamed chunk after the first (slow streams)")
	flag.Parse()
	opts := []ollamatest.Option{ollamatest.WithoutRecording()}
	if *chunkDelay > 0 {
		opts = append(opts, ollamatest.WithFault(ollamatest.Fault{ChunkDelay: *chunkDelay}))
	}
	srv := ollamatest.NewServer(opts...)
	defer srv.Close()
	fmt.Println(srv.URL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case <-time.After(*lifetime):
		fmt.Fprintln(os.Stderr, "fakeollama: lifetime over, exiting")
	}
}
