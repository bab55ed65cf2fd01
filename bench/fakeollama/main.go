// Command fakeollama serves inference/ollamatest's fake Ollama as a process
// of its own, for the load benchmark (bench/run.sh): it answers at once,
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
	flag.Parse()
	srv := ollamatest.NewServer(ollamatest.WithoutRecording())
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
